"""Heat-equation residual: how far an energy is from a consistent family of noisy densities.

With y = x + sqrt(t) z, the densities p_t solve dp/dt = 1/2 Lap p, so U = -log p_t satisfies
    dU/dt = 1/2 Lap_y U - 1/2 |grad_y U|^2    at every (y, t).
A trained energy that breaks this is not one normalized family: its one-shot NLL (energy differences across t)
and its PF-ODE NLL (grad_y U only) then disagree, by about the integral over log t of t * (mean residual).

Two estimators of the mean residual over noisy data y = x + sqrt(t) z:
- heat_residual: the Laplacian by exact trace or Hutchinson probes (second derivatives; any point y);
- stein_residual: Stein's lemma E_z[z . grad U(x + sqrt(t) z)] = sqrt(t) E_z[Lap U] replaces the Laplacian, so
  t r = t dU/dt - 1/2 sqrt(t) z . grad U + 1/2 t |grad U|^2 in expectation: first derivatives only, one network
  call per image and t, which makes the whole predicted gap a minute's work on a CPU instead of a PF-ODE run.
"""
import math

import numpy as np
import torch

from ..data.arrays import ArrayData
from .likelihood import NOISE_STREAM, stderr
from .pfode import grad_and_laplacian, rademacher_probes
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


STEIN_STREAM = 30_000  # draw j at level k uses rng stream STEIN_STREAM + k * draws + j


def stein_residual(model, data, ts, draws=4, seed=0, batch_size=256, device=None, dtype=torch.float32):
    """Per t: t * mean residual over (x, z) by Stein's lemma, with its standard error over images (nats per image);
    and the gap it predicts, integrated over log t per image: {"bits_per_dim", "stderr"} (PF-ODE - one-shot).

    The time target 1/2 (d - |z|^2) (mean exactly 0) is subtracted with its regression coefficient per t, a control
    variate that removes most of the noise once t exceeds the data's variances.
    """
    data = ArrayData.wrap(data)
    d, K = data.d, len(ts)
    vals, cvs = [], []
    for idx, x in data.batches(batch_size, device, dtype):
        v = torch.zeros(len(x), K, draws, dtype=torch.float64)
        c = torch.zeros_like(v)
        for k, t in enumerate(ts):
            tt = torch.full((len(x),), float(t), dtype=dtype, device=device)
            for j in range(draws):
                z = indexed_normal(idx, data.shape, seed, STEIN_STREAM + k * draws + j, dtype, device)
                with torch.enable_grad():
                    out = model(x + math.sqrt(t) * z, tt, need=("grad_y", "grad_t"))
                a, zf = math.sqrt(t) * out.grad_y.flatten(1), z.flatten(1)
                v[:, k, j] = (t * out.grad_t - 0.5 * (a * zf).sum(1) + 0.5 * a.square().sum(1)).double().cpu()
                c[:, k, j] = 0.5 * (d - zf.double().square().sum(1)).cpu()
        vals.append(v)
        cvs.append(c)
    v, c = torch.cat(vals), torch.cat(cvs)
    cc = c - c.mean((0, 2), keepdim=True)
    beta = (v * cc).sum((0, 2), keepdim=True) / cc.square().sum((0, 2), keepdim=True).clamp_min(1e-300)
    per_image = (v - beta * c).mean(2)  # (N, K): t * residual, one row per image
    rows = [{"t": float(t), "t_residual": per_image[:, k].mean().item(), "t_residual_stderr": stderr(per_image[:, k])}
            for k, t in enumerate(ts)]
    lt = torch.log(torch.as_tensor(np.asarray(ts, dtype=np.float64)))
    gap = ((per_image[:, 1:] + per_image[:, :-1]) / 2 * torch.diff(lt)).sum(1) / (d * math.log(2))
    return rows, {"bits_per_dim": gap.mean().item(), "stderr": stderr(gap)}


def integrated_gap(rows, d):
    """Trapezoid integral over log t of t * mean residual, in bits/dim: the expected PF-ODE - one-shot gap
    contributed by the t range of `rows` (first order)."""
    lt = np.log([r["t"] for r in rows])
    tr = np.array([r["t_residual"] for r in rows])
    return float(((tr[1:] + tr[:-1]) / 2 * np.diff(lt)).sum()) / (d * math.log(2))
