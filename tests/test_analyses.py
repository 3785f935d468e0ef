"""Dequantized NLL, effective dimension and the denoising curve on closed-form densities."""
import math

import numpy as np
import pytest
import torch

from dsmctl import units
from dsmctl.analysis.denoising import denoising_curve
from dsmctl.nll.dequantize import dequantized_nll
from dsmctl.analysis.dimension import dataset_means, dimension_profile, parse_t_grid
from dsmctl.data.arrays import ArrayData
from dsmctl.nn.densities import Gaussian
from dsmctl.nn.energy import EnergyOutput
from dsmctl.nll.likelihood import one_shot_nll


pytestmark = pytest.mark.usefixtures("one_thread")


def image_gaussian(d, g, lo=3e-3, hi=3e-2):
    """A Gaussian with pixel-like statistics: mean 1/2, variances lo .. hi, random basis."""
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    vals = torch.logspace(math.log10(lo), math.log10(hi), d, dtype=torch.float64)
    return Gaussian((d,), mean=torch.full((d,), 0.5, dtype=torch.float64), eigvecs=q, eigvals=vals, floor=0.0)


def quantized(dens, n, g):
    x = dens.sample(n, g).clamp(0, 1)
    return ArrayData((x * 255).round().to(torch.uint8).numpy(), name="quantized-gaussian")


def test_dequantized_and_one_shot_agree_with_the_analytic_nll(gen):
    d, n = 16, 3000
    dens = image_gaussian(d, gen)
    data = quantized(dens, n, gen)
    # Analytic reference on this sample: the exact density at the grid points, with the +8 bits convention.
    x = torch.from_numpy(data.array).double() / 255
    analytic = units.bits_per_dim(dens(x, 0.0).energy.mean().item(), d, 8)
    one = one_shot_nll(dens, data, constant=(0.0, 0.0), anchor="exact")
    deq = dequantized_nll(dens, data, draws=4, constant=(0.0, 0.0), anchor="exact")
    assert one.quantization_bits == 8
    assert abs(one.bits_per_dim - analytic) < 1e-4
    # The bound sits above the plug-in by the Jensen gap tr(S^-1)/(24 * 256^2) nats per image (tiny here).
    gap_bits = units.nats_to_bits((1 / dens.variances()).sum().item() / (24 * 256**2)) / d
    assert abs(deq.bits_per_dim - analytic - gap_bits) < 3 * deq.bits_per_dim_stderr / math.sqrt(n) + 2e-4
    assert deq.bits_per_dim - analytic < 0.005 / math.log(2)  # within 0.005 nats/dim
    # ... and both agree with the entropy of the density (sampling error of n images).
    entropy_bits = units.bits_per_dim(dens.entropy(), d, 8)
    assert abs(one.bits_per_dim - entropy_bits) < 4 * one.bits_per_dim_stderr
    assert len(deq.draw_means_bits_per_dim) == 4


def test_dequantization_is_keyed_by_index(gen):
    dens = image_gaussian(4, gen)
    data = ArrayData(quantized(dens, 40, gen).array.reshape(40, 1, 2, 2))
    flat = Gaussian((1, 2, 2), dens.mean, dens.eigvecs, dens.eigvals, 0.0)
    a = dequantized_nll(flat, data, draws=2, batch_size=7, constant=(0.0, 0.0), anchor="exact", return_per_image=True)
    b = dequantized_nll(flat, data, draws=2, batch_size=40, constant=(0.0, 0.0), anchor="exact", return_per_image=True)
    assert torch.allclose(a[2], b[2])


def test_dequantized_refuses_continuous_data(gen):
    with pytest.raises(ValueError, match="8-bit"):
        dequantized_nll(Gaussian.isotropic((3,)), torch.randn(5, 3, generator=gen), constant=(0.0, 0.0))


def test_effective_dimension_matches_closed_form(gen):
    d = 24
    dens = image_gaussian(d, gen, 1e-4, 1e-1)
    x = dens.sample(64, gen)
    grid = [1e-5, 1e-3, 1e-1]
    prof = dimension_profile(dens, x, grid, draws=200, dtype=torch.float64, constant=0.0)
    # Per image: t ||(S + tI)^-1 (x - mu)||^2 + sum lambda^2 / (lambda + t)^2 (the expectation over z).
    lam, V = dens.variances(), dens.eigvecs
    c = (x - dens.mean) @ V
    for j, t in enumerate(grid):
        per_image = t * (c**2 / (lam + t) ** 2).sum(1) + (lam**2 / (lam + t) ** 2).sum()
        assert torch.allclose(prof["d_eff"][:, j], per_image, rtol=0.15)
        err = (prof["d_eff"][:, j] - per_image).abs() / prof["d_eff_stderr"][:, j]
        assert err.mean() < 1.6  # errors the size the reported standard errors say
        # Dataset mean vs sum_i lambda_i / (lambda_i + t): sampling error of 64 images only.
        assert dataset_means(prof)[j]["d_eff"] == pytest.approx(dens.effective_dimension(t), rel=0.05)
        # E_z log p_t(x + sqrt(t) z) closed form.
        quad = (c**2 / (lam + t)).sum(1) + t * (1 / (lam + t)).sum()
        want = 0.5 * (quad + (lam + t).log().sum() + d * math.log(2 * math.pi))
        assert (prof["energy"][:, j] - want).abs().max() < 1.5  # 200 draws: SE ~ 0.25 nats per image
        assert abs((prof["energy"][:, j] - want).mean()) < 0.15


def test_parse_t_grid():
    assert parse_t_grid("1e-4:1:5") == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1, 1.0])
    assert parse_t_grid("0.1, 1") == [0.1, 1.0]
    for bad in ("1:0.1:3", "0:1:3", "a,b", "-1"):
        with pytest.raises(ValueError, match="--t-grid"):
            parse_t_grid(bad)


def test_denoising_curve_is_the_wiener_filter_for_a_gaussian(gen):
    d = 16
    dens = image_gaussian(d, gen)
    x = dens.sample(400, gen)
    rows = denoising_curve(dens, x, psnrs=(10.0, 30.0))
    lam = dens.variances()
    for r in rows:
        mse = (lam * r["t"] / (lam + r["t"])).sum().item() / d  # Wiener filter error per pixel
        assert r["psnr_of_mean_mse"] == pytest.approx(units.t_to_psnr(mse), abs=0.15)
        assert r["psnr_out"] > r["psnr_in"]


class Stretched:
    """U(y, k t) of a density g: normalized at each t, but its dU/dt is k times the heat-equation one (k = 2 default)."""

    def __init__(self, g, k=2.0):
        self.g, self.k = g, k

    def __call__(self, y, t, need=("energy",), create_graph=False):
        out = self.g(y, self.k * torch.as_tensor(t, dtype=y.dtype), need=need, create_graph=create_graph)
        grad_t = None if out.grad_t is None else self.k * out.grad_t
        return EnergyOutput(out.y, out.t / self.k, out.energy, out.grad_y, grad_t)


def test_stein_residual_matches_the_exact_laplacian(gen):
    """The Stein form (first derivatives only) estimates the same mean residual as the exact-trace one: zero for an
    exact Gaussian energy, the same non-zero value and integrated gap for a mis-timed one. (Whether that integrated
    gap predicts a real PF-ODE run: test_predicted_gap_against_a_real_pf_ode.)"""
    from dsmctl.nll.consistency import heat_residual, integrated_gap, stein_residual
    g = image_gaussian(16, gen)
    x = g.sample(400, generator=gen)
    ts = list(np.logspace(-3, 0, 7))
    rows, gap = stein_residual(g, x, ts, draws=4, dtype=torch.float64)
    for r in rows:
        assert abs(r["t_residual"]) < 4 * r["t_residual_stderr"] + 1e-9, r
    assert abs(gap["bits_per_dim"]) < 4 * gap["stderr"] + 1e-9


    bad, bad_gap = stein_residual(Stretched(g), x, ts, draws=4, dtype=torch.float64)
    exact = heat_residual(Stretched(g), x, ts, probes=None, dtype=torch.float64)
    for r, e in zip(bad, exact):
        assert abs(r["t_residual"] - e["t_residual"]) < 4 * r["t_residual_stderr"], (r, e)
    want = integrated_gap(exact, 16)
    assert abs(want) > 20 * gap["stderr"]  # far from zero: the check below is not vacuous
    assert bad_gap["bits_per_dim"] == pytest.approx(want, abs=4 * bad_gap["stderr"])


def test_heat_residual_vanishes_for_a_consistent_energy_only(gen):
    """Exact Gaussian energies satisfy dU/dt = 1/2 Lap U - 1/2 |grad U|^2; an energy whose time dependence is
    wrong (the Gaussian's energy at 2t read at t) does not, and the residual says so."""
    from dsmctl.nll.consistency import heat_residual, integrated_gap
    g = image_gaussian(16, gen)
    x = g.sample(200, generator=gen)
    rows = heat_residual(g, x, [1e-3, 1e-2, 1e-1], probes=None, dtype=torch.float64)
    for r in rows:
        assert abs(r["residual"]) < 1e-6 * max(1.0, r["t_abs_grad_t"] / r["t"]), r


    bad = heat_residual(Stretched(g), x, [1e-3, 1e-2, 1e-1], probes=None, dtype=torch.float64)
    assert all(abs(r["residual"]) > 4 * r["residual_stderr"] for r in bad), bad
    assert abs(integrated_gap(bad, 16)) > 10 * abs(integrated_gap(rows, 16))


def mis_timed_gap(g, x, k, t0, T):
    """Closed-form PF-ODE - one-shot gap per image (nats) of U_k(y, t) = U_g(y, k t), g = N(mu, V diag(lam) V^T),
    when the flow runs from x at t0 to t_max = T with the model's own U_k(., T) as prior and no constant.

    The flow dy/dt = 1/2 grad U_k moves eigen-coordinate c_i as c_i(t) = c_i(t0) r_i(t)^(1/(2k)),
    r_i = (lam_i + k t) / (lam_i + k t0), and L = int 1/2 Lap U_k dt = sum_i log(r_i(T)) / (2k). So
    gap = U_k(y_T, T) - L - U_k(x, t0) = 1/2 sum_i [c_i^2 (r_i^(1/k) / (lam_i + k T) - 1 / (lam_i + k t0))
    + (1 - 1/k) log r_i]: the integral of the heat residual along the flow, zero for k = 1."""
    lam = g.variances()
    c = (x - g.mean) @ g.eigvecs
    r = (lam + k * T) / (lam + k * t0)
    return 0.5 * (c**2 * (r ** (1 / k) / (lam + k * T) - 1 / (lam + k * t0))).sum(1) + 0.5 * ((1 - 1 / k) * r.log()).sum()


# Predictor / closed-form gap, measured on this test's sample (d = 16, 400 images, t in [1e-3, 1], 7 levels):
# k = 2: Stein 0.776 and exact-trace 0.783 for 1.319 bits/dim (ratio 0.59); k = 1.1: 0.017 and 0.022 for 0.089
# (ratio 0.19 / 0.25). The residual is taken at noisy data x + sqrt(t) z, not along the model's own flow, so the
# predictor is first order: right sign, an underestimate. (Issue 14 quotes 0.755-0.789 for 0.945 with a fitted
# prior and an anchored constant, which add an endpoint term; here the prior is the model's own U_k(., T).)
@pytest.mark.parametrize("k,band", [(2.0, (0.5, 0.7)), (1.1, (0.1, 0.4)), (1.0, None)])
def test_predicted_gap_against_a_real_pf_ode(gen, k, band):
    """A real PF-ODE on the mis-timed Gaussian U(y, k t) matches the closed-form gap per image; the consistency
    predictor (Stein and exact trace) has the right sign and its measured first-order ratio to it."""
    from dsmctl.nll.consistency import heat_residual, integrated_gap, stein_residual
    from dsmctl.nll.pfode import pf_ode_nll

    d, t0, T = 16, 1e-3, 1.0
    g = image_gaussian(d, gen)
    x = g.sample(400, generator=gen)
    model = Stretched(g, k)
    res, idx, ode_energy, nfe, status = pf_ode_nll(model, x, model, t_min=t0, t_max=T, probes=None,
                                                   batch_size=400, dtype=torch.float64)
    assert res.n_converged == 400 and torch.equal(idx, torch.arange(400))
    gap = ode_energy - model(x, t0).energy  # PF-ODE - one-shot, nats per image
    want = mis_timed_gap(g, x, k, t0, T)
    assert (gap - want).abs().max() < 2e-3, (gap - want).abs().max()  # measured <= 4e-4 nats per image
    bits = d * math.log(2)
    ode_bpd, want_bpd = gap.mean().item() / bits, want.mean().item() / bits
    ts = list(np.logspace(-3, 0, 7))
    _, stein = stein_residual(model, x, ts, draws=4, dtype=torch.float64)
    exact = integrated_gap(heat_residual(model, x, ts, probes=None, dtype=torch.float64), d)
    if band is None:  # the consistent energy: no gap, predicted or real
        assert abs(want_bpd) < 1e-12 and abs(ode_bpd) < 1e-4  # solver error: measured 2e-5
        assert abs(stein["bits_per_dim"]) < 4 * stein["stderr"] + 1e-9 and abs(exact) < 1e-9
        return
    assert ode_bpd == pytest.approx(want_bpd, rel=1e-3)
    for name, pred in (("stein", stein["bits_per_dim"]), ("exact", exact)):
        ratio = pred / ode_bpd
        assert band[0] < ratio < band[1], (name, pred, ode_bpd, ratio)
