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
        with pytest.raises(ValueError, match="t grid"):
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
    """U(y, 2t) of a density g: normalized at each t, but its dU/dt is twice the heat-equation one."""

    def __init__(self, g):
        self.g = g

    def __call__(self, y, t, need=("energy",), create_graph=False):
        out = self.g(y, 2 * torch.as_tensor(t, dtype=y.dtype), need=need, create_graph=create_graph)
        grad_t = None if out.grad_t is None else 2 * out.grad_t
        return EnergyOutput(out.y, out.t / 2, out.energy, out.grad_y, grad_t)


def test_stein_residual_matches_the_exact_laplacian_and_predicts_the_gap(gen):
    """The Stein form (first derivatives only) estimates the same mean residual as the exact-trace one: zero for an
    exact Gaussian energy, the same non-zero value and integrated gap for a mis-timed one."""
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
