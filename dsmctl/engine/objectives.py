"""Dual score matching: denoising score matching on grad_y U plus time-score matching on grad_t U.

With y = x + sqrt(t) z, z ~ N(0, I), per image (d = number of dimensions):
  space = (t/d) ||grad_y U - (y - x)/t||^2              = (1/d) ||sqrt(t) grad_y U - z||^2
  time  = (t/d)^2 (grad_t U - d/(2t) + ||y-x||^2/(2t^2))^2 = (1/2 (1 - ||z||^2/d) - t grad_t U / d)^2
Both are written in terms of z, which keeps them O(1) at every t from 1e-9 to 1e3.
"""
import math

import torch

from ..nn.energy import expand_as


def sample_t(n, t_min, t_max, generator=None, device=None, dtype=torch.float32):
    """Log-uniform noise variances, p(t) ~ 1/t on [t_min, t_max]."""
    u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
    return torch.exp(math.log(t_min) + u * (math.log(t_max) - math.log(t_min))).to(dtype)


def noisy(x, t, z):
    """y = x + sqrt(t) z as a fresh leaf that does not depend on t (see EnergyModel)."""
    return (x + expand_as(t.detach().sqrt(), x) * z).detach()


def space_term(out, z):
    d = z[0].numel()
    r = expand_as(out.t.detach().sqrt(), z) * out.grad_y - z
    return r.flatten(1).square().sum(1) / d


def time_term(out, z):
    d = z[0].numel()
    target = 0.5 * (1 - z.flatten(1).square().sum(1) / d)
    return (target - out.t.detach() * out.grad_t / d).square()


def time_target(x, y, t):
    """Regression target for grad_t U: d/(2t) - ||y - x||^2/(2 t^2); its mean given y is the true grad_t U."""
    d = x[0].numel()
    return d / (2 * t) - (y - x).flatten(1).square().sum(1) / (2 * t**2)


def score_matching_loss(model, x, t, z, mode="dual", time_weight=1.0):
    """Batch-mean loss and per-image terms. mode: 'dual' (space + time) or 'single' (space only)."""
    if mode not in ("dual", "single"):
        raise ValueError(f"unknown loss mode '{mode}'; expected dual or single")
    y = noisy(x, t, z)
    need = ("grad_y", "grad_t") if mode == "dual" else ("grad_y",)
    out = model(y, t, need=need, create_graph=True)
    space = space_term(out, z)
    time = time_term(out, z) if mode == "dual" else torch.zeros_like(space)
    loss = (space + time_weight * time).mean()
    return loss, {"space": space.detach(), "time": time.detach()}
