"""The dequantized bounds against closed-form discrete densities: exact bin probabilities of product densities.

A product density p(y) = prod_i p_1(y_i) has exact bin probabilities P(k) = prod_i int_{B_k_i} p_1, so the discrete
NLL of 8-bit images is known in closed form (normal CDFs). The bounds must sit above it for every K (within
Monte-Carlo error) and tend to it as K grows; a spiky density (narrow Gaussians on the grid) must get a negative
plug-in, flagged, while the bound stays above the truth.
"""
import math

import numpy as np
import pytest
import torch

from dsmctl import units
from dsmctl.data.arrays import ArrayData
from dsmctl.nll import flags
from dsmctl.nll.dequantize import HALF_BIN, bin_offsets, choose, dequantized_nll, iw_nll, draw_energies
from dsmctl.nll.likelihood import one_shot_nll
from dsmctl.nn.output import EnergyOutput, as_batch_t, parse_need

LN2 = 0.6931471805599453


class GridMixture:
    """Per pixel independently: sum_j w_j N(m_j, s^2 + t), levels m_j on the 8-bit grid (a closed-form density)."""

    def __init__(self, shape, levels, scale, weights=None):
        self.shape, self.d = tuple(shape), math.prod(shape)
        self.m = torch.tensor([k / 255 for k in levels], dtype=torch.float64)
        self.s = scale
        w = torch.full((len(levels),), 1 / len(levels), dtype=torch.float64) if weights is None else torch.tensor(weights)
        self.logw = (w / w.sum()).log().double()

    def __call__(self, y, t, need=("energy",), create_graph=False):
        parse_need(need)
        t = as_batch_t(t, y).double()
        v = (self.s ** 2 + t)[:, None, None]
        yy = y.reshape(len(y), -1, 1).double()
        logp = torch.logsumexp(self.logw - 0.5 * (yy - self.m) ** 2 / v - 0.5 * torch.log(2 * math.pi * v), -1)
        out = EnergyOutput(y, t)
        out.energy = -logp.sum(1)
        return out

    def exact_bits(self, k, t=0.0):
        """Per-image exact discrete NLL in bits/dim of 8-bit images k (N, ...) uint8: -log2 prod_i P_t(bin k_i) / d."""
        x = torch.as_tensor(k).reshape(len(k), -1, 1).double() / 255
        sd = math.sqrt(self.s ** 2 + t)
        cdf = torch.special.ndtr
        mass = (self.logw.exp() * (cdf((x + HALF_BIN - self.m) / sd) - cdf((x - HALF_BIN - self.m) / sd))).sum(-1)
        return -mass.log().sum(1) / (self.d * LN2)

    def sample_grid(self, n, g, levels):
        """Images whose pixels are the mixture's levels, drawn with its weights (on the grid exactly)."""
        j = torch.multinomial(self.logw.exp(), n * self.d, replacement=True, generator=g)
        return torch.tensor(levels, dtype=torch.uint8)[j].reshape(n, *self.shape).numpy()


def gaussian_grid_data(n, d, mean, sd, g):
    """8-bit images of a product Gaussian N(mean, sd^2) per pixel: sample, clamp to [0, 1], round to the grid."""
    x = (mean + sd * torch.randn(n, d, generator=g, dtype=torch.float64)).clamp(0, 1)
    return (x * 255).round().to(torch.uint8).reshape(n, 1, 8, 8).numpy()


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


def bound_bits(density, data, k, **kw):
    _, _, per_image = dequantized_nll(density, data, draws=k, constant=(0.0, 0.0), anchor="exact",
                                      return_per_image=True, **kw)
    return units.bits_per_dim(per_image, data.d, 8)


def test_bound_is_above_the_exact_discrete_nll_for_every_k_and_tends_to_it(gen):
    """A product Gaussian with a pixel standard deviation of 1.5 bins: the Jensen gap is large per image, the
    importance-weighted bound closes most of it by K = 64, and no K goes below the truth."""
    d, n, sd = 64, 300, 1.5 / 256
    density = GridMixture((1, 8, 8), [128], sd)  # one level: a Gaussian N(128/255, sd^2) per pixel
    data = ArrayData(gaussian_grid_data(n, d, 128 / 255, sd, gen))
    exact = density.exact_bits(data.array)
    gaps = {}
    _, a = draw_energies(density, data, 64)
    for k in (1, 4, 16, 64):
        gap = units.bits_per_dim(iw_nll(a, 0.0, k), d, 8) - exact
        se = gap.std().item() / math.sqrt(n)
        assert gap.mean().item() > -3 * se - 1e-9, (k, gap.mean().item(), se)
        gaps[k] = gap.mean().item()
    assert gaps[1] > gaps[4] > gaps[16] > gaps[64] > 0
    assert gaps[64] < 0.35 * gaps[1]  # the truth is approached, not only the bound lowered a little
    # The estimator reports the same numbers (convergence rows are prefixes of the same draws).
    res = dequantized_nll(density, data, draws=64, constant=(0.0, 0.0), anchor="exact")
    conv = {r["draws"]: r["bits_per_dim"] for r in res.convergence}
    assert conv[1] == pytest.approx(exact.mean().item() + gaps[1], abs=1e-9)
    assert conv[64] == pytest.approx(res.bits_per_dim) and conv[64] == pytest.approx(exact.mean().item() + gaps[64])
    assert res.jensen_bits_per_dim >= res.bits_per_dim


def test_bound_with_p_t_is_above_the_exact_discrete_nll_of_p_t(gen):
    d, n, sd, t = 64, 200, 1.5 / 256, 2e-5
    density = GridMixture((1, 8, 8), [128], sd)
    data = ArrayData(gaussian_grid_data(n, d, 128 / 255, sd, gen))
    exact_t = density.exact_bits(data.array, t)
    bound = bound_bits(density, data, 16, t=t)
    gap = bound - exact_t
    assert gap.mean().item() > -3 * gap.std().item() / math.sqrt(n)
    assert gap.mean().item() < 0.05  # and it is tight there (smooth at the bin scale)
    # p_t at this t is a different discrete model than p_0: its truth is above p_0's for this data
    assert exact_t.mean() > density.exact_bits(data.array).mean()


def test_spiky_density_negative_plug_in_is_flagged_and_the_bound_stays_above_the_truth(gen):
    """Narrow Gaussians (s = 1e-4 << the bin 3.9e-3) on five grid levels: the true discrete NLL is log2(5)
    bits/dim, the plug-in reports the peaks' height, -1.6 bits/dim, impossible for a discrete model."""
    levels, s = [0, 64, 128, 192, 255], 1e-4
    density = GridMixture((1, 8, 8), levels, s)
    data = ArrayData(density.sample_grid(200, gen, levels))
    exact = density.exact_bits(data.array)
    assert exact.mean().item() == pytest.approx(math.log2(5), abs=1e-6)
    plug = one_shot_nll(density, data, constant=(0.0, 0.0), anchor="exact", return_per_image=True)
    assert plug[0].bits_per_dim < 0
    found = flags.below_zero("the plug-in", plug[0].to_dict(), units.bits_per_dim(plug[2], data.d, 8))
    assert [f["code"] for f in found] == ["below-zero"] and "impossible" in found[0]["message"]

    uniform = bound_bits(density, data, 4)
    assert (uniform - exact).min() > 0  # far above (the uniform proposal misses the peaks), never below
    assert uniform.mean() > exact.mean() + 10
    narrow = bound_bits(density, data, 16, proposal="truncnorm", scale=s)
    gap = narrow - exact
    assert gap.mean().item() > -3 * gap.std().item() / math.sqrt(len(gap)) - 1e-6
    assert gap.mean().item() < 0.01  # the proposal matched to the peaks makes the bound tight
    # The plug-in is far below the bound: flagged as such, through the paired difference eval-nll reports.
    idx = torch.arange(len(data))
    diff = flags.paired(idx, plug[2], idx, units.bits_per_dim_to_energy(narrow, data.d, 8), data.d)
    assert diff["bits_per_dim"] < -3
    assert [f["code"] for f in flags.plug_in_vs_bound(diff)] == ["plug-in-below-bound"]


def test_auto_choice_finds_the_peak_scale_on_held_out_images(gen):
    levels, s = [0, 128, 255], 1e-4
    density = GridMixture((1, 8, 8), levels, s)
    held = ArrayData(density.sample_grid(64, gen, levels))
    t, scale, rows = choose(density, held, (0.0, 0.0), draws=4, proposal="truncnorm", t=0.0)
    assert t == 0.0 and scale == 1e-4 and len(rows) == 5
    # With t open too: p_t smooths the peaks, which helps the uniform proposal until p_t spreads its mass over the
    # neighbouring bins (sd ~ a bin): the choice is inside the grid, the lowest of its rows, far below t = 0's.
    t2, _, rows2 = choose(density, held, (0.0, 0.0), draws=4, proposal="uniform")
    best = min(rows2, key=lambda r: r["bits_per_dim"])
    assert t2 == best["t"] and 0 < t2 < max(r["t"] for r in rows2)
    assert rows2[0]["t"] == 0 and rows2[0]["bits_per_dim"] > best["bits_per_dim"] + 5


def test_truncnorm_offsets_stay_in_the_bin_and_their_density_is_normalized():
    idx = np.arange(2000)
    for scale in (1e-3, 2e-3, 1.0):  # where 1/q has a finite, moderate variance under q
        u, rel = bin_offsets(idx, (1,), 0, 0, "truncnorm", scale, torch.float64)
        assert u.abs().max() <= HALF_BIN
        # E_q[1/q] = bin width: (1/N) sum exp(-log q) ~ 1/256, i.e. mean exp(-rel) = 1 (rel = log q - log 256)
        assert torch.exp(-rel).mean().item() == pytest.approx(1.0, rel=0.05)
    # A scale far below the bin: an untruncated normal, log q = log phi(u/s) - log s, and u/s ~ N(0, 1)
    u, rel = bin_offsets(idx, (1,), 0, 0, "truncnorm", 1e-5, torch.float64)
    w = u[:, 0] / 1e-5
    assert rel == pytest.approx(-0.5 * w ** 2 - 0.5 * math.log(2 * math.pi) - math.log(1e-5) - math.log(256))
    assert w.std().item() == pytest.approx(1.0, abs=0.05) and abs(w.mean().item()) < 0.1
    u, rel = bin_offsets(idx, (3,), 0, 1, "uniform", None, torch.float64)
    assert u.abs().max() <= HALF_BIN and rel.abs().max() == 0


def test_eval_nll_flags_an_impossible_plug_in_and_a_plug_in_far_below_the_bound(gen):
    """eval-nll's flag check (nll/evaluate.check_flags) on the estimators' own answers for the spiky density: the
    plug-in below 0 bits/dim (a probability above one) and far below the bound are both flagged; the bound is not."""
    from types import SimpleNamespace

    from dsmctl.nll import dequantize, one_shot
    from dsmctl.nll.evaluate import check_flags

    levels = [0, 64, 128, 192, 255]
    density = GridMixture((1, 8, 8), levels, 1e-4)
    data = ArrayData(density.sample_grid(100, gen, levels))
    req = SimpleNamespace(t=0.0, t_max=1.0, anchor="exact", batch_size=64, seed=0, device=None, constant=(0.0, 0.0),
                          draws=8, bound_t=0.0, proposal="truncnorm", proposal_scale=1e-4, estimator="dequantized",
                          dequantize=False, log=None)
    ref = one_shot.estimate(density, data, req)
    bound = dequantize.estimate(density, data, req)
    out = {"nll": bound.result.to_dict(),
           "difference": flags.paired(ref.indices, ref.nll, bound.indices, bound.nll, data.d)}
    codes = [f["code"] for f in check_flags(out, req, ref, data.d)]
    assert codes == ["below-zero", "plug-in-below-bound"]
    assert bound.result.bits_per_dim > 0 and ref.result.bits_per_dim < 0
