"""Results that no normalized model can give, or that are not what they look like: flagged beside the number.

A probability of an 8-bit image is at most 1, so a discrete NLL below 0 bits/dim is impossible. A plug-in
(density at the grid point times the bin volume, the paper's protocol) far below a valid bound of the same model
means the density has peaks on the grid narrower than a bin: the plug-in reports their height, not a probability.
A one-shot number that claims more probability than the same network's PF-ODE says its constant (or its
consistency across noise levels) is off in the flattering direction. Each flag: {"code", "message"}.
"""
import math

import torch

from .. import units

SIGNIFICANT_BITS = 0.05  # bits/dim: a paired difference must exceed this and 3 standard errors to be flagged


def paired(a_idx, a_nll, b_idx, b_nll, d):
    """Mean and standard error of (a - b) in bits/dim over the images both have (finite), or None."""
    at = {int(i): float(v) for i, v in zip(a_idx.tolist(), a_nll.tolist())}
    diff = [at[int(i)] - float(v) for i, v in zip(b_idx.tolist(), b_nll.tolist())
            if int(i) in at and math.isfinite(at[int(i)]) and math.isfinite(float(v))]
    if len(diff) < 2:
        return None
    diff = torch.tensor(diff, dtype=torch.float64) / (d * units.LN2)
    return {"bits_per_dim": diff.mean().item(), "stderr": (diff.std() / math.sqrt(len(diff))).item(),
            "n_images": len(diff)}


def below_zero(name, result, per_image_bits=None):
    """Flag a discrete NLL (8-bit data) below 0 bits/dim, in the mean or on some images."""
    out = []
    if not result.get("quantization_bits", 8 if result.get("is_bound") else None):
        return out
    if result["bits_per_dim"] < 0:
        out.append({"code": "below-zero", "message": (
            f"{name} is {result['bits_per_dim']:.4f} bits/dim, below 0: a probability above one per 8-bit image, "
            "impossible for a normalized discrete model" + (
                "; the plug-in reports the height of density peaks on the 8-bit grid, not a probability: quote "
                "the bound" if not result.get("is_bound") else "; the normalization constant is wrong"))})
    elif per_image_bits is not None:
        n = int((per_image_bits < 0).sum())
        if n:
            out.append({"code": "below-zero-images", "message": (
                f"{name}: {n} of {len(per_image_bits)} images below 0 bits/dim (a probability above one), "
                "impossible for a normalized discrete model")})
    return out


def plug_in_vs_bound(diff):
    """Flag a plug-in significantly below the bound of the same model (diff = plug-in - bound, paired)."""
    if diff is None or not diff["bits_per_dim"] < -max(SIGNIFICANT_BITS, 3 * diff["stderr"]):
        return []
    return [{"code": "plug-in-below-bound", "message": (
        f"the plug-in (paper's protocol) is {-diff['bits_per_dim']:.3f} ± {diff['stderr']:.3f} bits/dim below the "
        "bound: either the density puts peaks on the 8-bit grid narrower than a bin, and the plug-in measures their "
        "height, not the probability of the images (train with data.dequantize; quote the bound), or the bound is "
        "loose (see its convergence in K; try more --draws or another --proposal)")}]


def one_shot_vs_pf_ode(diff):
    """Flag a one-shot NLL significantly below the same network's PF-ODE NLL (diff = one-shot - PF-ODE, paired)."""
    if diff is None or not diff["bits_per_dim"] < -max(SIGNIFICANT_BITS, 3 * diff["stderr"]):
        return []
    return [{"code": "one-shot-below-pf-ode", "message": (
        f"the one-shot NLL claims {-diff['bits_per_dim']:.3f} ± {diff['stderr']:.3f} bits/dim more probability "
        "than the PF-ODE of the same network: its constant or its consistency across noise levels is off in the "
        "flattering direction, so one-shot numbers (and bounds built on its constant) of this model are not safe "
        "to publish")}]
