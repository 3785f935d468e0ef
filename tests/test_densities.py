"""Closed-form densities: derivatives, entropies and sampling agree with independent computations."""

import pytest
import torch

from dsmctl.nn.densities import Gaussian, Mixture, gsm


def random_cov(d, g):
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def densities(g):
    d = 6
    cov = random_cov(d, g)
    mean = torch.randn(d, generator=g, dtype=torch.float64)
    full = Gaussian.from_covariance(cov, mean)
    x = torch.randn(5, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    lowrank = Gaussian.fit(x, min_var=0.3)  # 5 samples in 6 dims: rank 4 + floor
    return {"isotropic": Gaussian.isotropic((d,), 2.5), "full": full, "lowrank": lowrank,
            "gsm": gsm(d, (1.0, 16.0)), "mixture": Mixture([full, Gaussian.isotropic((d,), 0.5)], [0.3, 0.7])}


@pytest.mark.parametrize("name", ["isotropic", "full", "lowrank", "gsm", "mixture"])
def test_derivatives_match_finite_differences(name, gen):
    dens = densities(gen)[name]
    y = 2 * torch.randn(4, dens.d, generator=gen, dtype=torch.float64)
    t = torch.tensor([1e-2, 0.3, 1.0, 5.0], dtype=torch.float64)
    out = dens(y, t, need=("energy", "grad_y", "grad_t"))
    h = 1e-6
    for i in range(dens.d):
        e = torch.zeros_like(y)
        e[:, i] = h
        fd = (dens(y + e, t).energy - dens(y - e, t).energy) / (2 * h)
        assert torch.allclose(out.grad_y[:, i], fd, rtol=1e-6, atol=1e-7)
    fd_t = (dens(y, t + h).energy - dens(y, t - h).energy) / (2 * h)
    assert torch.allclose(out.grad_t, fd_t, rtol=1e-6, atol=1e-7)


def test_gaussian_energy_matches_torch_distribution(gen):
    d = 5
    cov = random_cov(d, gen)
    mean = torch.randn(d, generator=gen, dtype=torch.float64)
    dens = Gaussian.from_covariance(cov, mean)
    y = torch.randn(7, d, generator=gen, dtype=torch.float64)
    t = 0.4
    ref = torch.distributions.MultivariateNormal(mean, cov + t * torch.eye(d, dtype=torch.float64))
    assert torch.allclose(dens(y, t).energy, -ref.log_prob(y), rtol=1e-10)
    assert dens.entropy(t) == pytest.approx(ref.entropy().item(), rel=1e-10)


def test_lowrank_equals_dense_equivalent(gen):
    dens = densities(gen)["lowrank"]
    v = dens.eigvecs
    cov = v @ torch.diag(dens.eigvals) @ v.T + dens.floor * (torch.eye(dens.d, dtype=torch.float64) - v @ v.T)
    dense = Gaussian.from_covariance(cov, dens.mean)
    y = torch.randn(3, dens.d, generator=gen, dtype=torch.float64)
    for t in (0.0, 0.7):
        a, b = dens(y, t, need=("energy", "grad_y", "grad_t")), dense(y, t, need=("energy", "grad_y", "grad_t"))
        assert torch.allclose(a.energy, b.energy, rtol=1e-9)
        assert torch.allclose(a.grad_y, b.grad_y, rtol=1e-8, atol=1e-10)
        if t > 0:
            assert torch.allclose(a.grad_t, b.grad_t, rtol=1e-8)


def test_mixture_energy_is_logsumexp(gen):
    d = 3
    m = gsm(d, (1.0, 16.0), [0.25, 0.75])
    y = torch.randn(4, d, generator=gen, dtype=torch.float64)
    t = 0.2
    p = 0.25 * torch.exp(-Gaussian.isotropic((d,), 1.2)(y, 0).energy) + \
        0.75 * torch.exp(-Gaussian.isotropic((d,), 16.2)(y, 0).energy)
    assert torch.allclose(m(y, t).energy, -p.log(), rtol=1e-10)


def test_samples_have_the_right_covariance(gen):
    d = 4
    cov = random_cov(d, gen)
    dens = Gaussian.from_covariance(cov)
    x = dens.sample(200_000, gen)
    emp = x.T @ x / len(x)
    assert torch.allclose(emp, cov, atol=0.02)
    m = gsm(1000, (1.0, 16.0))
    r2 = m.sample(2000, gen).square().mean(1)
    # half the radii^2/d near 1, half near 16
    assert abs((r2 < 4).double().mean().item() - 0.5) < 0.05


def test_effective_dimension_closed_form():
    dens = Gaussian(shape=(3,), eigvecs=torch.eye(3, dtype=torch.float64), eigvals=torch.tensor([1.0, 0.1, 0.01]), floor=0)
    assert dens.effective_dimension(0.1) == pytest.approx(1 / 1.1 + 0.5 + 0.01 / 0.11)


def test_ledoit_wolf_intensity_and_held_out_fit(gen):
    """The shrinkage intensity equals its definition computed the slow way, vanishes as N >> d, and the shrunk
    fit from N < d samples is full rank and far better than the floored ML fit on held-out samples."""
    from dsmctl.nn.densities import ledoit_wolf

    d = 12
    true = Gaussian.from_covariance(torch.diag(torch.logspace(-3, -1, d, dtype=torch.float64)))
    x = true.sample(40, generator=gen)
    xc = x - x.mean(0)
    cov = xc.T @ xc / len(x)
    mu = cov.trace() / d
    b2 = sum(((v[:, None] * v[None, :] - cov) ** 2).sum() for v in xc) / len(x) ** 2
    d2 = ((cov - mu * torch.eye(d, dtype=torch.float64)) ** 2).sum()
    shrunk, delta = ledoit_wolf(xc)
    assert delta == pytest.approx(min(1.0, (b2 / d2).item()), rel=1e-10)
    assert torch.allclose(shrunk, (1 - delta) * cov + delta * mu * torch.eye(d, dtype=torch.float64))
    assert ledoit_wolf(true.sample(20000, generator=gen) - true.mean)[1] < 0.01

    big = Gaussian.from_covariance(torch.diag(torch.logspace(-4, -1, 64, dtype=torch.float64)))
    few, held_out = big.sample(16, generator=gen), big.sample(2000, generator=gen)
    lw, ml = Gaussian.fit(few, min_var=1e-6, shrink=True), Gaussian.fit(few, min_var=1e-6)
    assert lw.rank == 64 and 0 < lw.shrinkage < 1 and ml.rank < 64
    u_lw, u_ml = lw(held_out, 0.0).energy.mean(), ml(held_out, 0.0).energy.mean()
    assert u_lw < u_ml - 64  # at least 1 nat/dim better
