"""Dequantized NLL of 8-bit images: importance-weighted upper bounds on the discrete NLL, K forward passes per image.

Convention. Pixel value k in {0..255} sits at x = k/255 (what the models are trained on). Give it the bin
B_k = [x - 1/512, x + 1/512) of width 1/256 centred on the grid point; the bins of different k are disjoint
(1/256 < 1/255), so P(k) = int_{B_k} p is a (sub-)probability over 8-bit images, for ANY density p on R^d:
p_0, or p_t at a t > 0 (p_t = p_0 * N(0, tI) is a density too). With offsets u_1..u_K ~ q inside the bin,
    -log P(k) <= -log (1/K) sum_k p(x + u_k) / q(u_k)                    (importance-weighted, Burda et al.)
              <= (1/K) sum_k [-log p(x + u_k) + log q(u_k)]              (Jensen; the K = 1 value in expectation)
and the importance-weighted bound tightens monotonically (in expectation) towards -log P(k) as K grows.
Proposals q inside the bin, per pixel independently:
  uniform:   u = (v - 1/2)/256, log q = d log 256 (then bits/dim = E[U + c]/(d ln 2) + 8 for K = 1);
  truncnorm: N(0, s^2) truncated to [-1/512, 1/512), for a density with peaks on the grid narrower than a bin.
The scale s and the noise level t of p_t are free: both can be chosen on held-out *training* images (`choose`),
never on the evaluation images. Everything is keyed by (seed, draw, dataset index), so results do not depend on
batch size, order or sharding. The bound is only a bound for a normalized density: its constant c comes from
the one-shot anchor at t_max, so quote the PF-ODE check with it (docs/likelihood.md).
"""
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .. import units
from ..data.arrays import ArrayData
from .likelihood import normalization_constant, stderr
from .request import Estimate, RequestError
from ..rng import indexed_uniform

DEQUANT_STREAM = 100  # draw k uses rng stream DEQUANT_STREAM + k
BIN_WIDTH = 1 / 256
HALF_BIN = BIN_WIDTH / 2
PROPOSALS = ("uniform", "truncnorm")
CONVERGENCE_K = (1, 4, 16, 64)  # reported when at least that many draws were made
T_GRID = (0.0, 1e-8, 1e-7, 3e-7, 1e-6, 3e-6, 1e-5)  # candidates for --bound-t auto
SCALE_GRID = (3e-5, 1e-4, 3e-4, 1e-3, 2e-3)  # candidates for --proposal-scale auto (truncnorm)


@dataclass
class DequantResult:
    nats_per_dim: float  # of the density part (without the d log 256 of the bins), as the one-shot's
    bits_per_dim: float  # the importance-weighted bound with all draws, +8
    bits_per_dim_stderr: float
    log_p_db_per_dim: float
    draws: int
    jensen_bits_per_dim: float  # the looser Jensen bound from the same draws
    convergence: list  # [{draws K, bits_per_dim, stderr}] of the importance-weighted bound on the first K draws
    draw_means_bits_per_dim: list  # Jensen per draw: the draw-to-draw noise
    proposal: str
    proposal_scale: float | None
    bound_t: float  # the noise level of the density p_t that is integrated over the bins
    t_max: float
    anchor: str
    constant: float
    constant_stderr: float
    n_images: int
    d: int
    seed: int
    data: str
    data_fingerprint: str | None
    is_bound: bool = True
    chosen_on: str | None = None  # how proposal_scale / bound_t were chosen, when --... auto
    convention: str = ("bins of width 1/256 centred on the 8-bit grid k/255; bits/dim = -log2 of the "
                       "importance-weighted estimate of the bin probability, per dim (an upper bound on the "
                       "discrete NLL of a normalized density)")
    extra: dict = field(default_factory=dict)

    def to_dict(self):
        return asdict(self)


def bin_offsets(idx, shape, seed, draw, proposal="uniform", scale=None, dtype=torch.float32, device=None):
    """Offsets u inside the bin for one draw, keyed by (seed, draw, index), and log q(u) - d log 256 per image
    (0 for the uniform proposal): the proposal's log-density relative to the uniform one, float64 on the CPU."""
    v = indexed_uniform(idx, shape, seed, DEQUANT_STREAM + draw, torch.float64)
    if proposal == "uniform":
        u, rel = (v - 0.5) * BIN_WIDTH, torch.zeros(len(idx), dtype=torch.float64)
    elif proposal == "truncnorm":
        a = HALF_BIN / scale
        lo = torch.special.ndtr(torch.tensor(-a, dtype=torch.float64))
        mass = torch.special.erf(torch.tensor(a / math.sqrt(2), dtype=torch.float64))  # 1 - 2 Phi(-a), accurately
        p = (lo + v * mass).clamp(1e-300, 1 - 1e-16)
        w = torch.special.ndtri(p).clamp(-a, a)  # standardized offset, inverse-CDF sampling of the truncated normal
        u = w * scale
        log_q = -0.5 * w.square() - 0.5 * math.log(2 * math.pi) - math.log(scale) - torch.log(mass)
        rel = (log_q - math.log(256)).flatten(1).sum(1)
        u = u.clamp(-HALF_BIN, HALF_BIN * (1 - 1e-12))
    else:
        raise ValueError(f"unknown proposal {proposal!r}; expected one of {PROPOSALS}")
    return u.to(dtype=dtype, device=device), rel


@torch.no_grad()
def draw_energies(model, data, draws=4, t=0.0, proposal="uniform", scale=None, batch_size=256, seed=0, device=None,
                  dtype=torch.float32):
    """(indices, a (N, draws)): a = U(x + u_k, t) + log q(u_k) - d log 256 in nats, so that -log w_k = a + c."""
    data = ArrayData.wrap(data)
    if data.quantization_bits != 8:
        raise ValueError(f"{data.name}: dequantization needs 8-bit images (uint8 data), got continuous data")
    all_idx, all_a = [], []
    for idx, x in data.batches(batch_size, device, dtype):
        cols = []
        for k in range(draws):
            u, rel = bin_offsets(idx, data.shape, seed, k, proposal, scale, dtype, device)
            tt = torch.full((len(idx),), float(t), dtype=dtype, device=device)
            cols.append(model(x + u, tt, need=("energy",)).energy.double().cpu() + rel)
        all_idx.append(torch.as_tensor(idx))
        all_a.append(torch.stack(cols, 1))
    return torch.cat(all_idx), torch.cat(all_a)


def iw_nll(a, c, k=None):
    """Per image -log (1/K) sum_k exp(-(a_k + c)) over the first K draws, nats (the importance-weighted bound)."""
    a = a[:, :k] if k else a
    return -torch.logsumexp(-(a + c), 1) + math.log(a.shape[1])


def dequantized_nll(model, data, draws=4, t_max=1e3, anchor="paper", batch_size=256, seed=0, device=None,
                    constant=None, anchor_density=None, return_per_image=False, t=0.0, proposal="uniform",
                    scale=None, chosen_on=None):
    """Mean +- standard error of the importance-weighted bound; `constant=(c, se)` reuses a known constant."""
    if draws < 1:
        raise ValueError(f"draws must be at least 1, got {draws}")
    if proposal == "truncnorm" and not (scale and scale > 0):
        raise ValueError(f"the truncnorm proposal needs a positive scale, got {scale}")
    data = ArrayData.wrap(data)
    if constant is None:
        constant = normalization_constant(model, data, t_max, anchor, batch_size, seed, device, anchor_density)
    c, c_se = constant
    idx, a = draw_energies(model, data, draws, t, proposal, scale, batch_size, seed, device)
    d = data.d

    def summary(per_image):
        return (units.bits_per_dim(per_image.mean().item(), d, 8),
                units.nats_to_bits(math.hypot(stderr(per_image), c_se)) / d)

    per_image = iw_nll(a, c)
    bits, se = summary(per_image)
    conv = []
    for k in sorted({k for k in CONVERGENCE_K if k < draws} | {draws}):
        b, s = summary(iw_nll(a, c, k))
        conv.append({"draws": k, "bits_per_dim": b, "stderr": s})
    jensen = a + c
    res = DequantResult(
        nats_per_dim=per_image.mean().item() / d, bits_per_dim=bits, bits_per_dim_stderr=se,
        log_p_db_per_dim=units.log_p_db_per_dim(per_image.mean().item(), d), draws=draws,
        jensen_bits_per_dim=units.bits_per_dim(jensen.mean().item(), d, 8), convergence=conv,
        draw_means_bits_per_dim=[units.bits_per_dim(m, d, 8) for m in jensen.mean(0).tolist()],
        proposal=proposal, proposal_scale=scale if proposal != "uniform" else None, bound_t=float(t),
        t_max=float(t_max), anchor=anchor, constant=c, constant_stderr=c_se, n_images=len(data), d=d, seed=seed,
        data=data.name, data_fingerprint=data.fingerprint, chosen_on=chosen_on)
    return (res, idx, per_image) if return_per_image else res


def choose(model, data, constant, draws=4, t_grid=T_GRID, scale_grid=SCALE_GRID, proposal="uniform", t=None,
           scale=None, batch_size=256, seed=0, device=None):
    """Pick the bound's noise level t (when t is None) and the truncnorm scale (when proposal is truncnorm and scale
    is None) that give the lowest mean bound on `data` (held-out *training* images: never the evaluation set).
    t first with the given proposal (uniform when the scale is still open), then the scale at that t.
    Returns (t, scale, rows): rows are every candidate's mean bound in bits/dim, for the record."""
    c = constant[0]
    rows = []

    def mean_bits(tt, prop, s):
        _, a = draw_energies(model, data, draws, tt, prop, s, batch_size, seed, device)
        b = units.bits_per_dim(iw_nll(a, c).mean().item(), data.d, 8)
        rows.append({"t": tt, "proposal": prop, "scale": s, "bits_per_dim": b})
        return b

    if t is None:
        first = proposal if proposal == "uniform" or scale else "uniform"
        t = min(t_grid, key=lambda tt: mean_bits(tt, first, scale if first != "uniform" else None))
    if proposal == "truncnorm" and scale is None:
        scale = min(scale_grid, key=lambda s: mean_bits(t, "truncnorm", s))
    return t, scale, rows


def check(data, request):
    """eval-nll refusals that need the data: only 8-bit images have bins to dequantize."""
    if data.quantization_bits != 8:
        raise RequestError(f"{data.name}: --estimator dequantized needs 8-bit image data, this split is continuous")


def estimate(model, data, request):
    """eval-nll's estimator interface: request resolved (draws, bound_t, proposal, proposal_scale, t_max, anchor,
    batch_size, seed, device, constant); "auto" values are chosen on the held-out training images first."""
    t0 = time.time()
    t, scale, chosen_on = request.bound_t, request.proposal_scale, None
    if t == "auto" or scale == "auto":
        from .. import data as data_mod

        train = data_mod.open_split(request.source, request.train_split, request.synthetic)
        held = train.subset(held_out_positions(len(train)))
        t, scale, rows = choose(model, held, request.constant, request.draws, proposal=request.proposal,
                                t=None if t == "auto" else t, scale=None if scale == "auto" else scale,
                                batch_size=request.batch_size, seed=request.seed, device=request.device)
        chosen_on = (f"lowest mean bound on {len(held)} held-out images of {held.name} (the training split, not the "
                     f"evaluation images), {request.draws} draws, over " + ", ".join(
                         f"t={r['t']:g}" + (f"/s={r['scale']:g}" if r["scale"] else "") + f": {r['bits_per_dim']:.4f}"
                         for r in rows))
        if request.log:
            request.log(f"[bound] chose t={t:g}" + (f", truncnorm scale {scale:g}" if scale else "") + f" ({chosen_on})")
    res, idx, nll = dequantized_nll(model, data, request.draws, request.t_max, request.anchor, request.batch_size,
                                    request.seed, request.device, constant=request.constant, return_per_image=True,
                                    t=t, proposal=request.proposal, scale=scale, chosen_on=chosen_on)
    return Estimate(res, idx, nll, time.time() - t0, protocol(res))


def baseline(density, data, request, device=None):
    """The same bound for a closed-form density (the Gaussian baseline goes through the same estimator, uniform
    proposal at t = 0: its exact density)."""
    return dequantized_nll(density, data, request.draws, request.t_max, "exact", request.batch_size, request.seed, device,
                           constant=(0.0, 0.0))


def protocol(r):
    prop = "uniform" if r.proposal == "uniform" else f"truncated normal (scale {r.proposal_scale:g})"
    return (f"dequantized NLL, importance-weighted upper bound on the discrete NLL with {r.draws} {prop} draws per "
            f"image inside each 1/256 bin (keyed by index, seed {r.seed}), density p_t at t={r.bound_t:g}; "
            f"constant c={r.constant:.6g}±{r.constant_stderr:.2g} nats at t_max={r.t_max:g} ({r.anchor} anchor), "
            f"{r.n_images} images of {r.data} (fingerprint {r.data_fingerprint})")


def held_out_positions(n_train, n=256):
    """The last n images of the training split: where auto choices are made (never the evaluation images)."""
    return np.arange(max(0, n_train - n), n_train)
