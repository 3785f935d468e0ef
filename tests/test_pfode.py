"""PF-ODE likelihood: the solver, the divergence and the whole estimator against closed-form densities."""
import math

import pytest
import torch

from dsmctl.nn.densities import Gaussian, gsm
from dsmctl.nll.pfode import anchor_prior, dopri5, grad_and_laplacian, pf_ode_nll, rademacher_probes


pytestmark = pytest.mark.usefixtures("one_thread")


def full_gaussian(d, g, mean=0.5):
    """A full-covariance Gaussian with an image-like spectrum (variances 1e-3 .. 5e-2) in a random basis."""
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    vals = torch.logspace(-3, math.log10(5e-2), d, dtype=torch.float64)
    return Gaussian((d,), mean=torch.full((d,), mean, dtype=torch.float64), eigvecs=q, eigvals=vals, floor=0.0)


def test_dopri5_solves_a_known_ode_with_per_row_steps():
    # d state/ds = -k state, k differs per row: each row must land on exp(-k) within tolerance.
    k = torch.tensor([0.5, 2.0, 10.0], dtype=torch.float64)
    calls = []

    def fn(s, state, rows):
        calls.append(len(rows))
        return -k[rows, None] * state

    state, status, nfe, steps = dopri5(fn, torch.ones(3, 2, dtype=torch.float64), 0.0, 1.0, rtol=1e-8, atol=1e-10)
    assert status.tolist() == [0, 0, 0]
    assert torch.allclose(state[:, 0], torch.exp(-k), rtol=1e-7)
    assert nfe[2] > nfe[0]  # the stiffer row took more steps, the others did not pay for it
    assert ((nfe - 1) % 6 == 0).all() and (nfe >= 1 + 6 * steps).all()  # FSAL: 6 evaluations per attempt


def test_dopri5_reports_blow_up_instead_of_averaging_it():
    def fn(s, state, rows):
        out = state.clone()
        out[rows == 1] = state[rows == 1] ** 2 * 50  # y' = 50 y^2 from y = 1 blows up at s = 0.02
        return out

    state, status, nfe, _ = dopri5(fn, torch.ones(2, 2, dtype=torch.float64), 0.0, 1.0, max_steps=200)
    assert status[0] == 0 and status[1] != 0


def test_laplacian_exact_and_hutchinson(gen):
    dens = full_gaussian(6, gen)
    y = dens.sample(3, gen)
    t = torch.full((3,), 0.01, dtype=torch.float64)
    g, lap = grad_and_laplacian(dens, y, t)
    exact = (1 / (dens.variances() + 0.01)).sum()  # Laplacian of a Gaussian energy: tr (S + tI)^-1
    assert torch.allclose(lap, exact.expand(3), rtol=1e-10)
    assert torch.allclose(g, dens(y, t, need=("grad_y",)).grad_y)
    probes = rademacher_probes([0, 1, 2], (6,), 4000, seed=0, dtype=torch.float64, device=None)
    _, lap_h = grad_and_laplacian(dens, y, t, probes)
    assert torch.allclose(lap_h, exact.expand(3), rtol=0.05)
    again = rademacher_probes([2, 0], (6,), 3, seed=0, dtype=torch.float64, device=None)
    assert torch.equal(again[:, 1], probes[:3, 0])  # keyed by dataset index, not by batch position


def test_hutchinson_probes_only_the_network_part_of_a_model_with_a_gaussian_base(gen):
    """With model.base gaussian the base's Laplacian is exact and only the network's Hessian is probed: on a model
    whose network is still zero (as built) one probe gives the exact trace; with a non-zero network the
    estimate stays unbiased."""
    from dsmctl.nn.build import build_model
    from dsmctl.recipe import Model

    shape = (1, 4, 4)
    torch.manual_seed(2)  # build_model draws the initial weights from the global generator: fix them
    model = build_model(Model(widths=(8,), mid_width=8, layers_per_block=2, embedding="logt", base="gaussian"),
                        shape).double()
    mix = torch.randn(16, 16, generator=gen) / 4  # correlated pixels: the base Hessian is far from diagonal
    model.base.set_gaussian(Gaussian.fit((torch.rand(200, 16, generator=gen) @ mix).reshape(200, *shape), shrink=True))
    y = torch.rand(3, *shape, generator=gen, dtype=torch.float64)
    t = torch.full((3,), 0.01, dtype=torch.float64)
    _, exact = grad_and_laplacian(model, y, t)
    one = rademacher_probes([0, 1, 2], shape, 1, seed=0, dtype=torch.float64, device=None)
    _, lap1 = grad_and_laplacian(model, y, t, one)
    torch.testing.assert_close(lap1, exact, rtol=1e-10, atol=0)
    with torch.no_grad():
        model.net.out.weight.normal_(0, 30.0, generator=gen)
    _, exact = grad_and_laplacian(model, y, t)
    many = rademacher_probes([0, 1, 2], shape, 3000, seed=0, dtype=torch.float64, device=None)
    _, lap_h = grad_and_laplacian(model, y, t, many)
    net_part = exact - model.base.laplacian(t)
    assert net_part.abs().min() > 1  # the network contributes, so the check below is not only the base's
    assert torch.allclose(lap_h, exact, rtol=0, atol=0.05 * net_part.abs().max().item())


@pytest.mark.parametrize("anchor", ["exact", "paper", "gaussian"])
def test_pf_ode_matches_analytic_nll_gaussian(anchor, gen):
    d = 8
    dens = full_gaussian(d, gen, mean=0.0 if anchor == "paper" else 0.5)
    x = dens.sample(24, gen)
    truth = dens(x, 0.0).energy
    fit_on = dens.sample(2000, gen) if anchor == "gaussian" else None  # independent of the evaluated images
    prior = dens if anchor == "exact" else anchor_prior(anchor, fit_on, (d,))
    res, idx, energy, nfe, status = pf_ode_nll(dens, x, prior, t_min=1e-9, t_max=1e3, rtol=1e-6, atol=1e-6,
                                               dtype=torch.float64, batch_size=24)
    assert res.n_converged == 24 and not res.not_converged
    per_image = ((energy - truth).abs() / d).max().item()
    assert per_image < 0.005, per_image
    assert abs(res.nats_per_dim - truth.mean().item() / d) < 0.005
    assert res.nfe_mean > 20 and res.divergence == "exact"


def test_pf_ode_matches_analytic_nll_gsm(gen):
    d = 12
    dens = gsm(d, (1.0, 16.0))
    x = dens.sample(12, gen)
    truth = dens(x, 0.0).energy
    res, _, energy, _, _ = pf_ode_nll(dens, x, dens, t_min=1e-9, t_max=1e3, rtol=1e-6, atol=1e-6,
                                      dtype=torch.float64, batch_size=12)
    print(res.nfe_mean)
    assert ((energy - truth).abs() / d).max().item() < 0.005
    assert abs(res.nats_per_dim - truth.mean().item() / d) < 0.005


@pytest.mark.slow
def test_pf_ode_hutchinson_gsm_d1000(gen):
    """The paper's GSM (d = 1000) with one Rademacher probe: the mean over images stays within 0.005 nats/dim."""
    d = 1000
    dens = gsm(d, (1.0, 16.0))
    x = dens.sample(64, gen)
    truth = dens(x, 0.0).energy
    res, _, energy, _, _ = pf_ode_nll(dens, x, dens, t_min=1e-9, t_max=1e3, probes=1, dtype=torch.float64,
                                      batch_size=64)
    assert abs(res.nats_per_dim - truth.mean().item() / d) < 0.005


def test_pf_ode_on_noisy_images_matches_the_one_shot_noise(gen):
    """noisy_t > 0: the ODE starts at y = x + sqrt(t) z with the one-shot's keyed z; exact density -> same energy."""
    from dsmctl.nll.likelihood import energies

    d = 6
    dens = full_gaussian(d, gen)
    x = dens.sample(10, gen)
    _, want = energies(dens, x, 0.01, dtype=torch.float64)
    res, _, energy, _, _ = pf_ode_nll(dens, x, dens, t_max=1e3, rtol=1e-6, atol=1e-6, dtype=torch.float64,
                                      batch_size=10, noisy_t=0.01)
    assert res.noisy_t == 0.01 and res.t_min == 0.01 and res.quantization_bits is None
    assert ((energy - want).abs() / d).max() < 0.005
