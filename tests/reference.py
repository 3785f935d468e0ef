"""Reference numbers for the tests, written out from the formulas (not from dsmctl's estimators).

Only the keyed noise (dsmctl.rng) and the model call are shared with the code under test: the tests must see the
same noise draws to compare image by image. Constants are literals, so a wrong units.LN2 cannot cancel out.
"""
import math

import numpy as np
import torch

from dsmctl.data import open_split
from dsmctl.rng import indexed_normal, indexed_uniform

LN2 = 0.6931471805599453
LN10 = 2.302585092994046
NOISE, ANCHOR, DENOISE, DEQUANT, DIM = 1, 2, 3, 100, 10_000  # the rng streams documented in each module


def images(n, source="demo", split="test"):  # n None: the whole split
    """(dataset indices, the first n images as float32 in [0, 1]) of an 8-bit split, as the loader feeds them."""
    arr = open_split(source, split).array[:n]
    return np.arange(len(arr)), torch.from_numpy(arr.astype(np.float32) / 255)


def energy(model, y, t):
    with torch.no_grad():
        return model(y, t, need=("energy",)).energy.double()


def denoised(model, y, t):
    return model(y, t, need=("denoised",)).denoised.detach()


def gaussian_anchor_constant(model, x, t_max, seed=0):
    """(c, stderr) = mean_i [G(y_i) - U(y_i, t_max)], y_i = x_i + sqrt(t_max) z_i on the anchor stream; G = -log of
    N(mean, Cov + t_max I) from torch.distributions, Cov the ML covariance of x with eigenvalues floored at a
    quantization bin's variance 1/(12 * 255^2)."""
    n = len(x)
    y = x + math.sqrt(t_max) * indexed_normal(np.arange(n), x.shape[1:], seed, ANCHOR)
    u = energy(model, y, t_max)
    flat = x.reshape(n, -1).double()
    xc = flat - flat.mean(0)
    lam, vecs = torch.linalg.eigh(xc.T @ xc / n)
    cov = vecs @ torch.diag(lam.clamp_min(1 / (12 * 255**2)) + t_max) @ vecs.T
    g = -torch.distributions.MultivariateNormal(flat.mean(0), cov).log_prob(y.reshape(n, -1).double())
    per_image = g - u
    return per_image.mean().item(), (per_image.std() / math.sqrt(n)).item()


def paper_anchor_constant(model, x, t_max, seed=0):
    """(c, stderr) = (d/2) log(2 pi e t_max) - mean_i U(y_i, t_max), y_i = x_i + sqrt(t_max) z_i on the anchor
    stream: the paper's anchor, p_t_max taken as N(0, t_max I)."""
    n, d = len(x), x[0].numel()
    y = x + math.sqrt(t_max) * indexed_normal(np.arange(n), x.shape[1:], seed, ANCHOR)
    per_image = 0.5 * d * math.log(2 * 3.141592653589793 * 2.718281828459045 * t_max) - energy(model, y, t_max)
    return per_image.mean().item(), (per_image.std() / math.sqrt(n)).item()


def one_shot_bits(model, x, c, t=0.0, seed=0):
    """Per-image NLL in bits/dim of 8-bit images at t = 0 (+8), of the noisy images (no +8) at t > 0."""
    d = x[0].numel()
    y = x if t == 0 else x + math.sqrt(t) * indexed_normal(np.arange(len(x)), x.shape[1:], seed, NOISE)
    return (energy(model, y, t) + c) / (d * LN2) + (8 if t == 0 else 0)


def log_p_db(nats, d):
    return -10 * nats / (d * LN10)


def dequantized_bits(model, x, c, draws, seed=0):
    """(N, draws) of [U(x + (u - 1/2)/256, 0) + c] / (d ln 2) + 8, u ~ U[0, 1)^d keyed by (seed, draw, index)."""
    d, idx = x[0].numel(), np.arange(len(x))
    cols = [energy(model, x + (indexed_uniform(idx, x.shape[1:], seed, DEQUANT + k) - 0.5) / 256, 0.0)
            for k in range(draws)]
    return (torch.stack(cols, 1) + c) / (d * LN2) + 8


def iw_dequantized_bits(model, x, c, draws, seed=0):
    """(N,) importance-weighted bound in bits/dim: -log2 (1/K) sum_k p(x + u_k) / 256^-d per dim, the uniform draws
    of dequantized_bits (log-mean-exp of the per-draw nats, written out)."""
    d = x[0].numel()
    nats = (dequantized_bits(model, x, c, draws) - 8) * d * LN2  # (N, K): U(x + u_k) + c
    m = (-nats).max(1, keepdim=True).values
    lme = m[:, 0] + torch.log(torch.exp(-nats - m).mean(1))  # log (1/K) sum exp(-nats)
    return -lme / (d * LN2) + 8


def psnr_out(model, x, psnr_in, seed=0):
    """Mean over images of -10 log10(mean_pixels (D(y, t) - x)^2), t = 10^(-psnr_in / 10), D = y - t grad_y U."""
    t = 10 ** (-psnr_in / 10)
    y = x + math.sqrt(t) * indexed_normal(np.arange(len(x)), x.shape[1:], seed, DENOISE)
    mse = (denoised(model, y, t) - x).flatten(1).double().square().mean(1)
    return (-10 * mse.log10()).mean().item()


def d_eff(model, x, t, draws, seed=0):
    """(N,) E_z ||x - D(x + sqrt(t) z, t)||^2 / t over `draws` keyed draws; and (N,) mean U over the same draws."""
    idx = np.arange(len(x))
    errs, us = [], []
    for k in range(draws):
        y = x + math.sqrt(t) * indexed_normal(idx, x.shape[1:], seed, DIM + k)
        out = model(y, t, need=("energy", "grad_y"))
        errs.append((x - out.denoised.detach()).flatten(1).double().square().sum(1) / t)
        us.append(out.energy.detach().double())
    return torch.stack(errs).mean(0), torch.stack(us).mean(0)


class FittedGaussian:
    """-log N(y; mean, Cov + t I) with the ML mean and covariance of x (eigenvalues floored at 1/(12 * 255^2)),
    from torch.distributions: the 'Gaussian fitted to the training split' baseline, as a model."""

    def __init__(self, x):
        flat = x.reshape(len(x), -1).double()
        self.mean = flat.mean(0)
        xc = flat - self.mean
        lam, self.vecs = torch.linalg.eigh(xc.T @ xc / len(x))
        self.lam = lam.clamp_min(1 / (12 * 255**2))

    def __call__(self, y, t, need=("energy",), create_graph=False):
        from dsmctl.nn.output import EnergyOutput, as_batch_t

        cov = self.vecs @ torch.diag(self.lam + float(t)) @ self.vecs.T
        out = EnergyOutput(y, as_batch_t(t, y))
        out.energy = -torch.distributions.MultivariateNormal(self.mean, cov).log_prob(y.reshape(len(y), -1).double())
        return out
