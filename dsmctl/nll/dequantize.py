"""Dequantized NLL of 8-bit images: an upper bound on the discrete NLL, comparable with Table 2's baselines.

Convention. Pixel value k in {0..255} sits at x = k/255 (what the models are trained on). Give it the
bin B_k = [x - 1/512, x + 1/512) of width 1/256, centred on the grid point; the bins of different k are
disjoint (1/256 < 1/255), so P(k) = int_{B_k} p is a (sub-)probability over 8-bit images. With
x~ = x + (u - 1/2)/256, u ~ U[0, 1)^d, Jensen's inequality gives
    -log P(k) = -log E_u p(x~) + d log 256  <=  E_u[-log p(x~)] + d log 256,
so bits/dim = E_u[U(x~, 0) + c] / (d ln 2) + 8, exactly +8 (the bin width is 1/256). The plug-in one-shot
protocol, density at the grid point times 1/256^d, is the same formula without the expectation.
The noise u is keyed by dataset index and draw number; per image the draws are averaged, and the
standard error is over images (combined with that of the constant c). Per-draw means show the draw noise.
"""
import math
import time
from dataclasses import asdict, dataclass, field

import torch

from .. import units
from ..data.arrays import ArrayData
from .likelihood import normalization_constant, stderr
from .request import Estimate, RequestError
from ..rng import indexed_uniform

DEQUANT_STREAM = 100  # draw k uses rng stream DEQUANT_STREAM + k
BIN_WIDTH = 1 / 256


@dataclass
class DequantResult:
    nats_per_dim: float
    bits_per_dim: float
    bits_per_dim_stderr: float
    log_p_db_per_dim: float  # of the dequantized density values (before the bin width)
    draws: int
    draw_means_bits_per_dim: list
    t_max: float
    anchor: str
    constant: float
    constant_stderr: float
    n_images: int
    d: int
    seed: int
    data: str
    data_fingerprint: str | None
    convention: str = ("x~ = k/255 + (u - 1/2)/256, u ~ U[0,1)^d; bits/dim = E_u[-log p(x~)]/(d ln 2) + 8 "
                       "(bins of width 1/256 centred on the 8-bit grid; an upper bound on the discrete NLL)")
    extra: dict = field(default_factory=dict)

    def to_dict(self):
        return asdict(self)


@torch.no_grad()
def dequantized_energies(model, data, draws=4, batch_size=256, seed=0, device=None, dtype=torch.float32):
    """(indices, energies (N, draws)) of U(x + (u - 1/2)/256, 0) in nats, u keyed by (seed, draw, index)."""
    data = ArrayData.wrap(data)
    if data.quantization_bits != 8:
        raise ValueError(f"{data.name}: dequantization needs 8-bit images (uint8 data), got continuous data")
    all_idx, all_u = [], []
    for idx, x in data.batches(batch_size, device, dtype):
        per_draw = []
        for k in range(draws):
            u = indexed_uniform(idx, data.shape, seed, DEQUANT_STREAM + k, dtype, device)
            per_draw.append(model(x + (u - 0.5) * BIN_WIDTH, 0.0, need=("energy",)).energy.double().cpu())
        all_idx.append(torch.as_tensor(idx))
        all_u.append(torch.stack(per_draw, 1))
    return torch.cat(all_idx), torch.cat(all_u)


def dequantized_nll(model, data, draws=4, t_max=1e3, anchor="paper", batch_size=256, seed=0, device=None,
                    constant=None, anchor_density=None, return_per_image=False):
    """Mean +- standard error of the dequantized bound; `constant=(c, se)` reuses a known constant."""
    if draws < 1:
        raise ValueError(f"draws must be at least 1, got {draws}")
    data = ArrayData.wrap(data)
    if constant is None:
        constant = normalization_constant(model, data, t_max, anchor, batch_size, seed, device, anchor_density)
    c, c_se = constant
    idx, u = dequantized_energies(model, data, draws, batch_size, seed, device)
    nll = u + c  # (N, draws)
    per_image = nll.mean(1)
    mean, d = per_image.mean().item(), data.d
    se = units.nats_to_bits(math.hypot(stderr(per_image), c_se)) / d
    res = DequantResult(
        nats_per_dim=mean / d, bits_per_dim=units.bits_per_dim(mean, d, 8), bits_per_dim_stderr=se,
        log_p_db_per_dim=units.log_p_db_per_dim(mean, d), draws=draws,
        draw_means_bits_per_dim=[units.bits_per_dim(m, d, 8) for m in nll.mean(0).tolist()],
        t_max=float(t_max), anchor=anchor, constant=c, constant_stderr=c_se, n_images=len(data), d=d, seed=seed,
        data=data.name, data_fingerprint=data.fingerprint)
    return (res, idx, per_image) if return_per_image else res


def check(data, request):
    """eval-nll refusals that need the data: only 8-bit images have bins to dequantize."""
    if data.quantization_bits != 8:
        raise RequestError(f"{data.name}: --estimator dequantized needs 8-bit image data, this split is continuous")


def estimate(model, data, request):
    """eval-nll's estimator interface: request resolved (draws, t_max, anchor, batch_size, seed, device, constant)."""
    t0 = time.time()
    res, idx, nll = dequantized_nll(model, data, request.draws, request.t_max, request.anchor, request.batch_size,
                                    request.seed, request.device, constant=request.constant, return_per_image=True)
    return Estimate(res, idx, nll, time.time() - t0, protocol(res))


def baseline(density, data, request, device=None):
    """The same bound for a closed-form density (the Gaussian baseline goes through the same estimator)."""
    return dequantized_nll(density, data, request.draws, request.t_max, "exact", request.batch_size, request.seed, device,
                           constant=(0.0, 0.0))


def protocol(r):
    return (f"dequantized NLL (upper bound), {r.draws} uniform draws per image keyed by index (seed {r.seed}), "
            f"{r.convention}; constant c={r.constant:.6g}±{r.constant_stderr:.2g} nats at t_max={r.t_max:g} "
            f"({r.anchor} anchor), {r.n_images} images of {r.data} (fingerprint {r.data_fingerprint})")
