"""Dual score matching: denoising score matching on grad_y U plus time-score matching on grad_t U.

With y = x + sqrt(t) z, z ~ N(0, I), per image (d = number of dimensions):
  space = (t/d) ||grad_y U - (y - x)/t||^2              = (1/d) ||sqrt(t) grad_y U - z||^2
  time  = (t/d)^2 (grad_t U - d/(2t) + ||y-x||^2/(2t^2))^2 = (1/2 (1 - ||z||^2/d) - t grad_t U / d)^2
Both are written in terms of z, which keeps them O(1) at every t from 1e-9 to 1e3.

Optional (not in the paper): a heat-equation consistency penalty, see consistency_term.
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


def heat_residual_stein(out, z):
    """rho = (t dU/dt - 1/2 sqrt(t) z.grad_y U + 1/2 t |grad_y U|^2) / d, per image.

    U = -log p_t solves dU/dt = 1/2 Lap U - 1/2 |grad U|^2, and by Stein's lemma E_z[sqrt(t) z.grad U] =
    t E_z[Lap U] at fixed x, so E_z[rho | x, t] = 0 for the true energy: first derivatives only.
    """
    d = z[0].numel()
    t = out.t.detach()
    a = expand_as(t.sqrt(), z) * out.grad_y
    return (t * out.grad_t - 0.5 * (a * z).flatten(1).sum(1) + 0.5 * a.flatten(1).square().sum(1)) / d


def consistency_term(out, z):
    """rho_1 * rho_2 for two noise draws of the same image at the same t (the batch's first and second halves):
    an unbiased estimate of E_z[rho | x, t]^2, zero for an energy that is one consistent family across t."""
    rho = heat_residual_stein(out, z)
    m = len(rho) // 2
    return rho[:m] * rho[m:2 * m]


def paired(x, t):
    """The batch as pairs: its first half twice (with the same t), so that z's two halves are two noise draws."""
    m = len(x) // 2
    return torch.cat([x[:m], x[:m]]), torch.cat([t[:m], t[:m]])


def time_target(x, y, t):
    """Regression target for grad_t U: d/(2t) - ||y - x||^2/(2 t^2); its mean given y is the true grad_t U."""
    d = x[0].numel()
    return d / (2 * t) - (y - x).flatten(1).square().sum(1) / (2 * t**2)


def score_matching_loss(model, x, t, z, mode="dual", time_weight=1.0, consistency_weight=0.0):
    """Batch-mean loss and per-image terms. mode: 'dual' (space + time) or 'single' (space only).

    consistency_weight > 0 (not in the paper) pairs the batch (paired) and adds that weight times the mean of
    consistency_term; the space and time terms are then over the half batch of images with two draws each.
    """
    if mode not in ("dual", "single"):
        raise ValueError(f"unknown loss mode '{mode}'; expected dual or single")
    if consistency_weight:
        if len(x) % 2:
            raise ValueError(f"the consistency term pairs images: batch of {len(x)} is odd")
        x, t = paired(x, t)
    y = noisy(x, t, z)
    need = ("grad_y", "grad_t") if mode == "dual" or consistency_weight else ("grad_y",)
    out = model(y, t, need=need, create_graph=True)
    space = space_term(out, z)
    time = time_term(out, z) if mode == "dual" else torch.zeros_like(space)
    loss = (space + time_weight * time).mean()
    terms = {"space": space.detach(), "time": time.detach()}
    if consistency_weight:
        pair = consistency_term(out, z)
        loss = loss + consistency_weight * pair.mean()
        terms["consistency"] = pair.detach()
    return loss, terms
