"""The dual score matching objective is stationary at the true energy, and only there."""
import math

import pytest
import torch
from torch import nn

from dsmctl.nn.densities import Gaussian, gsm
from dsmctl.nn.energy import EnergyOutput, as_batch_t, parse_need
from dsmctl.engine.objectives import sample_t, score_matching_loss, time_target


class Perturbed(nn.Module):
    """U_true(y, t) + sum_j theta_j g_j(y, t), with a few smooth perturbations g_j."""

    def __init__(self, density, scale=1.0):
        super().__init__()
        self.density, self.scale = density, scale
        self.theta = nn.Parameter(torch.zeros(4, dtype=torch.float64))

    def g(self, y, t):
        d = y[0].numel()
        r2 = y.flatten(1).square().sum(1) / d
        s = y.flatten(1).sum(1) / math.sqrt(d)
        lt = torch.log(t)
        return torch.stack([r2 * d / (1 + t), s * torch.sqrt(t + 0.1), d * lt / (1 + lt.square()), r2 * s], 1)

    def forward(self, y, t, need=("energy",), create_graph=False):
        need = parse_need(need)
        t = as_batch_t(t, y)
        base = self.density(y, t, need=need | {"energy"})
        yl, tl = y.detach().requires_grad_(), t.detach().requires_grad_()
        # The true energy with a different variance scale is the "wrong model" control.
        pert = (self.g(yl, tl) * self.theta).sum(1)
        gy, gt = torch.autograd.grad(pert.sum(), (yl, tl), create_graph=True)
        out = EnergyOutput(y, t, energy=base.energy + pert)
        if "grad_y" in need:
            out.grad_y = self.scale * base.grad_y + gy
        if "grad_t" in need:
            out.grad_t = base.grad_t + gt
        return out


def mean_gradient(model, density, mode, n_batches=40, batch=500, t_range=(1e-2, 1e2), seed=0):
    g = torch.Generator().manual_seed(seed)
    grads = []
    for _ in range(n_batches):
        x = density.sample(batch, g)
        t = sample_t(batch, *t_range, generator=g, dtype=torch.float64)
        z = torch.randn(x.shape, generator=g, dtype=torch.float64)
        loss, _ = score_matching_loss(model, x, t, z, mode)
        grads.append(torch.autograd.grad(loss, model.theta)[0])
    grads = torch.stack(grads)
    return grads.mean(0), grads.std(0) / math.sqrt(n_batches)


@pytest.mark.parametrize("name", ["gaussian", "gsm"])
@pytest.mark.parametrize("mode", ["dual", "single"])
def test_true_energy_is_stationary(name, mode):
    d = 16
    density = Gaussian.from_covariance(torch.diag(torch.linspace(0.1, 4.0, d, dtype=torch.float64))) \
        if name == "gaussian" else gsm(d, (1.0, 16.0))
    mean, se = mean_gradient(Perturbed(density), density, mode)
    assert (mean.abs() < 4 * se + 1e-12).all(), (mean, se)


def test_wrong_energy_is_not_stationary():
    """The same check fails for a wrong score, so the stationarity test can fail."""
    d = 16
    density = gsm(d, (1.0, 16.0))
    mean, se = mean_gradient(Perturbed(density, scale=0.9), density, "dual")
    assert (mean.abs() > 8 * se).any(), (mean, se)


def test_time_target_has_the_true_conditional_mean(gen):
    """E[d/(2t) - ||y-x||^2/(2t^2) | y] = dU/dt for a GSM, by sampling x from the exact posterior."""
    d, t = 8, 0.5
    variances, weights = (1.0, 16.0), (0.5, 0.5)
    density = gsm(d, variances, list(weights))
    y = density.sample(3, gen) + math.sqrt(t) * torch.randn(3, d, generator=gen, dtype=torch.float64)
    truth = density(y, t, need=("grad_t",)).grad_t
    comps = [Gaussian.isotropic((d,), v)(y, t).energy for v in variances]
    resp = torch.softmax(torch.stack([math.log(w) - e for w, e in zip(weights, comps)], 1), 1)
    n = 200_000
    for i in range(3):
        k = torch.multinomial(resp[i], n, replacement=True, generator=gen)
        s = torch.tensor(variances, dtype=torch.float64)[k][:, None]
        post_mean, post_var = s / (s + t) * y[i], s * t / (s + t)
        x = post_mean + post_var.sqrt() * torch.randn(n, d, generator=gen, dtype=torch.float64)
        target = time_target(x, y[i].expand(n, d), torch.full((n,), t, dtype=torch.float64))
        se = target.std() / math.sqrt(n)
        assert abs(target.mean() - truth[i]) < 5 * se, (target.mean(), truth[i], se)


def test_loss_terms_are_order_one_at_the_truth():
    """In z-units both terms are O(1) at every t, and for a GSM each sits between its oracle and linear bounds."""
    d = 64
    density = gsm(d, (1.0, 16.0))
    g = torch.Generator().manual_seed(1)
    x = density.sample(4000, g)
    for t_val in (1e-6, 1e-2, 1e2):
        t = torch.full((4000,), t_val, dtype=torch.float64)
        z = torch.randn(x.shape, generator=g, dtype=torch.float64)
        _, terms = score_matching_loss(density, x, t, z, "dual")
        assert 0 <= terms["space"].mean() <= 1.01
        assert terms["time"].mean() < 1.0
        # Tight brackets. space = MMSE / (t d): at least the oracle's who knows the component (sum_k w_k s'_k,
        # s'_k = v_k / (v_k + t)), at most the best linear denoiser's (v / (v + t), v = the mean variance 8.5).
        # time = E Var(target | y) (t^2/d^2 scaled): at least the oracle's sum_k w_k (1 - s_k^2) / (2d), at most
        # Var(target) = 1/(2d).
        v = torch.tensor([1.0, 16.0], dtype=torch.float64)
        s = t_val / (v + t_val)
        for name, lo, hi in (("space", (1 - s).mean().item(), 8.5 / (8.5 + t_val)),
                             ("time", ((1 - s**2) / (2 * d)).mean().item(), 1 / (2 * d))):
            m, se = terms[name].mean().item(), terms[name].std().item() / math.sqrt(4000)
            assert lo - 4 * se < m < hi + 4 * se, (name, t_val, lo, m, hi, se)


def exact_gaussian_loss(variances, t):
    """Expected dual-SM terms of the exact energy of N(0, diag(lam)) data, by hand. With s = t / (lam + t) per
    coordinate: space = (1/d) E||sqrt(t) grad U - z||^2 = (1/d) sum (1 - s) (= d_eff / d, the denoiser's
    MSE / t); time = E[(1/(2d) sum ((1 - z^2) - s (1 - w^2)))^2] with w = y / sqrt(lam + t), corr(w, z)^2 = s,
    so Var(s w^2 - z^2) = 2 - 2 s^2 and time = (1/(2 d^2)) sum (1 - s^2): 1/(2d) at t -> 0, 0 at t -> inf."""
    d = len(variances)
    s = t / (variances + t)
    return (1 - s).sum().item() / d, (1 - s**2).sum().item() / (2 * d**2)


@pytest.mark.parametrize("t_val", [1e-6, 1e-2, 0.3, 1e2])
def test_loss_terms_at_the_truth_equal_their_closed_form(t_val):
    """Each term's mean at the exact energy equals its closed form to within its sampling error (<= 1 %):
    a weighting error (the 1/2 of the time target, the t/d of the space term, the (t/d)^2 of the time term)
    moves a term by far more than that."""
    d, n = 16, 20000
    variances = torch.logspace(-3, 1, d, dtype=torch.float64)
    density = Gaussian.from_covariance(torch.diag(variances))
    g = torch.Generator().manual_seed(3)
    x = density.sample(n, g)
    t = torch.full((n,), t_val, dtype=torch.float64)
    z = torch.randn(x.shape, generator=g, dtype=torch.float64)
    loss, terms = score_matching_loss(density, x, t, z, "dual")
    space, time = exact_gaussian_loss(variances, t_val)
    for name, want in (("space", space), ("time", time)):
        got = terms[name]
        se = got.std().item() / math.sqrt(n)
        assert abs(got.mean().item() - want) < 5 * se, (name, got.mean().item(), want, se)
        assert got.mean().item() == pytest.approx(want, rel=0.03), name
    assert loss.item() == pytest.approx(space + time, rel=0.01)
    assert loss.item() == pytest.approx((terms["space"] + terms["time"]).mean().item(), rel=1e-12)  # weights 1 and 1
    single, single_terms = score_matching_loss(density, x, t, z, "single")
    assert single.item() == pytest.approx(terms["space"].mean().item(), rel=1e-12)  # the space term alone
    assert (single_terms["time"] == 0).all()


def test_time_floor_is_one_over_2d_at_small_t():
    """At t -> 0 the exact energy's time term is the irreducible floor 1/(2d) (the z-noise of the target)."""
    for d in (8, 64):
        density = Gaussian.isotropic((d,), 0.5)
        g = torch.Generator().manual_seed(d)
        n = 20000
        x = density.sample(n, g)
        z = torch.randn(x.shape, generator=g, dtype=torch.float64)
        _, terms = score_matching_loss(density, x, torch.full((n,), 1e-8, dtype=torch.float64), z, "dual")
        assert terms["time"].mean().item() == pytest.approx(1 / (2 * d), rel=0.03)
        space = terms["space"]
        assert abs(space.mean().item() - 1.0) < 5 * space.std().item() / math.sqrt(n)  # s = 2e-8: d_eff = d


@pytest.mark.parametrize("t_min,t_max", [(1e-9, 1e3), (1e-2, 1e2)])
def test_sample_t_is_log_uniform(t_min, t_max):
    """p(t) ~ 1/t on [t_min, t_max]: log t is uniform (KS test), every decade gets the same share, and the
    mean of t is the log-uniform (t_max - t_min) / log(t_max / t_min), not the uniform (t_min + t_max) / 2."""
    from scipy import stats

    n = 20000
    t = sample_t(n, t_min, t_max, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert t.shape == (n,) and t.dtype == torch.float64
    assert t.min() >= t_min and t.max() <= t_max
    u = (t.log() - math.log(t_min)) / math.log(t_max / t_min)
    assert stats.kstest(u.numpy(), "uniform").pvalue > 1e-3
    decades = round(math.log10(t_max / t_min))
    counts = torch.histc(u, bins=decades, min=0, max=1)
    expected = n / decades
    assert ((counts - expected).abs() < 5 * math.sqrt(expected)).all(), counts
    log_uniform_mean = (t_max - t_min) / math.log(t_max / t_min)
    assert t.mean().item() == pytest.approx(log_uniform_mean, rel=0.1)
    # float32 default and independent draws per call
    t32 = sample_t(5, t_min, t_max, generator=torch.Generator().manual_seed(1))
    assert t32.dtype == torch.float32 and len(set(t32.tolist())) == 5
