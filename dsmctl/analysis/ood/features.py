"""Per-image statistics of a normalized energy at a grid of noise levels, the inputs of the OOD detector.

For each image x and each t in the grid, with y = x + sqrt(t) z (z keyed by dataset index and draw, rng.py):
  nll@t     (U(y, t) + c) / d            normalized -log p_t of the noisy copy, nats/dim
  grad2@t   log(||grad_y U(y, t)||^2 / d)  how steep the energy is there (the score's size)
  tdt@t     t dU/dt(y, t) / d             the time score (the heat-equation side of the model)
  T@t       (U(T y, t) - U(y, t)) / d     for each transform T in `transforms` (vflip: top-bottom, rot90, rot270:
                                        quarter turns): how much less probable the model finds the copy turned
                                        away from its orientation; the model's knowledge of layout, which the
                                        three above (sums of local quantities) barely carry
each averaged over the draws (t = 0 takes one: the clean image). One forward + backward pass per level and
draw gives the first three (model(y, t, need=("energy", "grad_y", "grad_t"))), one forward pass per transform
the others. Per image also:
  nll_bits  plug-in NLL at t = 0 in bits/dim (+8 for 8-bit data), the classic likelihood score
  bound_bits  a valid upper bound on the discrete NLL (valid_bound; 8-bit data only)
  zlib_bits   the image's zlib-compressed length in bits/dim (the input-complexity baseline, 8-bit only)
  base_bits   -log p of the model's own Gaussian base at t = 0 in bits/dim (model.base gaussian only)
"""
import math
import zlib

import numpy as np
import torch

from ...data.arrays import ArrayData
from ...rng import indexed_normal

OOD_STREAM = 20_000  # draw k uses rng stream OOD_STREAM + k
DEFAULT_T_GRID = (0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
KINDS = ("nll", "grad2", "tdt")
TRANSFORMS = {"vflip": lambda y: y.flip(-2), "hflip": lambda y: y.flip(-1),
              "rot90": lambda y: y.rot90(1, (-2, -1)), "rot180": lambda y: y.rot90(2, (-2, -1)),
              "rot270": lambda y: y.rot90(-1, (-2, -1))}
TURNS = ("rot90", "rot270")  # need square images
# vflip alone: the one orientation natural images share (gravity); chosen over vflip + quarter turns on the
# development models of docs/ood.md (the 500-step leave-one-class-out models). hflip is usually a training
# augmentation, and then carries nothing.
DEFAULT_TRANSFORMS = ("vflip",)
MAX_LEVELS = 64


def check_transforms(transforms, shape, label="--transforms"):
    """A list of distinct names of TRANSFORMS that apply to images of `shape` (quarter turns need H == W)."""
    names = list(transforms)
    bad = [n for n in names if n not in TRANSFORMS]
    if bad or len(set(names)) != len(names):
        raise ValueError(f"{label} {','.join(names)}: expected distinct names among {', '.join(TRANSFORMS)} "
                         "(or none)")
    if shape[-1] != shape[-2] and any(n in TURNS for n in names):
        raise ValueError(f"{label} {','.join(names)}: quarter turns need square images; these are "
                         f"{shape[-2]}x{shape[-1]} (use vflip, hflip or rot180)")
    return names


def parse_transforms(text, shape, label="--transforms"):
    """'auto' (DEFAULT_TRANSFORMS: vflip), 'none', a comma list of TRANSFORMS names, or a list of them."""
    if not isinstance(text, str):
        return check_transforms(text, shape, label)
    text = text.strip()
    if text == "auto":
        return list(DEFAULT_TRANSFORMS)
    if text == "none":
        return []
    return check_transforms([v.strip() for v in text.split(",") if v.strip()], shape, label)


def check_t_grid(t_grid, label="--t-grid"):
    """A non-empty, strictly increasing list of finite noise variances >= 0 (0 = the clean image)."""
    grid = [float(v) for v in t_grid]
    if not grid or len(grid) > MAX_LEVELS or any(not math.isfinite(v) or v < 0 for v in grid) \
            or any(b <= a for a, b in zip(grid, grid[1:])):
        raise ValueError(f"{label} {','.join(f'{v:g}' for v in grid) or '(empty)'}: expected 1..{MAX_LEVELS} "
                         "strictly increasing finite noise variances >= 0, e.g. 0,1e-4,1e-3,1e-2,0.1,1")
    return grid


def parse_t_grid(text, label="--t-grid"):
    try:
        values = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{label} {text!r}: expected a comma list of noise variances >= 0, e.g. "
                         "0,1e-4,1e-3,1e-2,0.1,1") from None
    return check_t_grid(values, label)


def feature_names(t_grid, transforms=()):
    return [f"{k}@{t:g}" for t in t_grid for k in KINDS + tuple(transforms)]


def forward_passes(t_grid, draws, bound_draws, transforms=()):
    """Forward passes per image (one per level and draw has a backward pass too)."""
    level_draws = sum(1 if t == 0 else draws for t in t_grid)
    return level_draws * (1 + len(transforms)) + bound_draws + (0 if 0.0 in t_grid else 1)


def valid_bound(model, data, constant, draws=2, seed=0, batch_size=128, device=None, t=0.0):
    """A valid upper bound on each image's discrete NLL, bits/dim: eval-nll's importance-weighted dequantized bound
    (nll/dequantize.py, uniform proposal, p_t at t: the recipe's eval.bound_t), the same numbers per image."""
    from ...nll.dequantize import draw_energies, iw_nll

    data = ArrayData.wrap(data)
    _, a = draw_energies(model, data, draws, t, "uniform", None, batch_size, seed, device)
    return (iw_nll(a, constant) / (data.d * math.log(2)) + 8).numpy()


def zlib_bits(data, level=9):
    """zlib-compressed length of each 8-bit image in bits/dim (the complexity estimate of Serra et al. 2020)."""
    data = ArrayData.wrap(data)
    rows = [data.array[i] for i in data.index(np.arange(len(data)))]
    return np.array([8 * len(zlib.compress(np.ascontiguousarray(r).tobytes(), level)) / data.d for r in rows])


@torch.no_grad()
def features(model, data, t_grid, constant, draws=1, seed=0, batch_size=128, device=None, bound_draws=2,
             progress=None, bound_t=0.0, transforms=()):
    """Every per-image statistic above; returns {"indices", "names", "values" (N, F) float64, "transforms", "nll_bits",
    "bound_bits", "zlib_bits", "base_bits" (None where they do not apply), "forward_passes"}."""
    data = ArrayData.wrap(data)
    t_grid = check_t_grid(t_grid, "t_grid")
    transforms = check_transforms(transforms, data.shape, "transforms")
    width = len(KINDS) + len(transforms)
    if draws < 1 or bound_draws < 0:
        raise ValueError(f"draws {draws} / bound_draws {bound_draws}: expected >= 1 and >= 0")
    d, eight_bit = data.d, data.quantization_bits == 8
    rows, idx_all, base_all = [], [], []
    base = getattr(model, "base", None)
    for idx, x in data.batches(batch_size, device):
        cols = []
        for t in t_grid:
            acc = torch.zeros(len(idx), width, dtype=torch.float64)
            n = 1 if t == 0 else draws
            for k in range(n):
                y = x if t == 0 else x + math.sqrt(t) * indexed_normal(idx, data.shape, seed, OOD_STREAM + k,
                                                                      x.dtype, x.device)
                o = model(y, t, need=("energy", "grad_y", "grad_t"))
                g2 = o.grad_y.double().flatten(1).pow(2).sum(1).cpu()
                u = o.energy.double().cpu()
                acc[:, 0] += (u + constant) / d
                acc[:, 1] += torch.log(g2 / d + 1e-300)
                acc[:, 2] += t * o.grad_t.double().cpu() / d
                for j, name in enumerate(transforms):
                    turned = model(TRANSFORMS[name](y), t, need=("energy",)).energy.double().cpu()
                    acc[:, 3 + j] += (turned - u) / d
            cols.append(acc / n)
        rows.append(torch.cat(cols, 1))
        idx_all.append(np.asarray(idx))
        if base is not None:
            base_all.append(base(x, torch.zeros(len(idx), dtype=x.dtype, device=x.device)).double().cpu())
        if progress:
            progress(len(idx))
    values = torch.cat(rows).numpy()
    t0 = t_grid.index(0.0) if 0.0 in t_grid else None
    if t0 is not None:
        nll_nats = values[:, width * t0] * d
    else:  # no clean level in the grid: one more pass for the plug-in NLL
        nll_nats = np.concatenate([(model(x, 0.0, need=("energy",)).energy.double().cpu().numpy() + constant)
                                   for _, x in data.batches(batch_size, device)])
    to_bits = 1 / (d * math.log(2))
    nll_bits = nll_nats * to_bits + (8 if eight_bit else 0)
    bound = valid_bound(model, data, constant, bound_draws, seed, batch_size, device, bound_t) \
        if eight_bit and bound_draws else None
    base_bits = torch.cat(base_all).numpy() * to_bits + (8 if eight_bit else 0) if base_all else None
    return {"indices": np.concatenate(idx_all), "names": feature_names(t_grid, transforms), "values": values,
            "transforms": list(transforms),
            "nll_bits": nll_bits, "bound_bits": bound, "zlib_bits": zlib_bits(data) if eight_bit else None,
            "base_bits": base_bits,
            "forward_passes": forward_passes(t_grid, draws, bound_draws if eight_bit else 0, transforms)}
