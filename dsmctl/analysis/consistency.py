"""Heat-equation residual: how far an energy is from a consistent family of noisy densities.

With y = x + sqrt(t) z, the densities p_t solve dp/dt = 1/2 Lap p, so U = -log p_t satisfies
    dU/dt = 1/2 Lap_y U - 1/2 |grad_y U|^2    at every (y, t).
A trained energy that breaks this is not one normalized family: its one-shot NLL (energy differences across t)
and its PF-ODE NLL (grad_y U only) then disagree, by about the integral over log t of t * (mean residual).
"""
import math

import numpy as np
import torch

from ..data.arrays import ArrayData
from ..likelihood import NOISE_STREAM, stderr
from ..pfode import grad_and_laplacian, rademacher_probes
from ..rng import indexed_normal


def heat_residual(model, data, ts, probes=8, seed=0, batch_size=256, device=None, dtype=torch.float32):
    """Per t: mean and standard error of r = dU/dt - (1/2 Lap U - 1/2 |grad U|^2) over the noisy images (nats per
    image), t * mean r, and the mean |t dU/dt| for scale. probes=None: exact Laplacian (small d only)."""
    data = ArrayData.wrap(data)
    rows = []
    for t in ts:
        res, scale = [], []
        for idx, x in data.batches(batch_size, device, dtype):
            y = x + math.sqrt(t) * indexed_normal(idx, data.shape, seed, NOISE_STREAM, dtype, device)
            tt = torch.full((len(x),), float(t), dtype=dtype, device=device)
            with torch.enable_grad():
                du_dt = model(y, tt, need=("grad_t",)).grad_t.detach()
            eps = None if probes is None else rademacher_probes(idx, data.shape, probes, seed, dtype, device)
            g, lap = grad_and_laplacian(model, y, tt, eps)
            res.append((du_dt - 0.5 * lap + 0.5 * g.flatten(1).pow(2).sum(1)).double().cpu())
            scale.append((t * du_dt).abs().double().cpu())
        r = torch.cat(res)
        rows.append({"t": float(t), "residual": r.mean().item(), "residual_stderr": stderr(r),
                     "t_residual": float(t) * r.mean().item(), "t_abs_grad_t": torch.cat(scale).mean().item()})
    return rows


def integrated_gap(rows, d):
    """Trapezoid integral over log t of t * mean residual, in bits/dim: the expected PF-ODE - one-shot gap
    contributed by the t range of `rows` (first order)."""
    lt = np.log([r["t"] for r in rows])
    tr = np.array([r["t_residual"] for r in rows])
    return float(((tr[1:] + tr[:-1]) / 2 * np.diff(lt)).sum()) / (d * math.log(2))
