"""Normalized log-probabilities from a dual-score-matching energy, and the one-shot NLL.

The network energy is known up to one constant c per model; dual score matching keeps that constant
the same at every t, so it is fixed where p_t is known: at t_max, p_t is nearly Gaussian.
  anchor "paper":    c = (d/2) log(2 pi e t_max) - mean_y U(y, t_max), y = x + sqrt(t_max) z
  anchor "gaussian": c = mean_y [G(y) - U(y, t_max)], G the energy of N(mean_x, Cov_x + t_max I)
The paper's anchor ignores the data's own variance (a bias of 1/2 sum_i log(1 + lambda_i/t_max)); the
Gaussian anchor removes it and, as a per-image difference, has a much smaller standard error.
"""
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .. import units
from ..data.arrays import ArrayData
from ..nn.densities import Gaussian
from ..rng import indexed_normal

ANCHORS = ("paper", "gaussian")
NOISE_STREAM, ANCHOR_STREAM = 1, 2  # rng streams: noisy evaluation data, noisy anchor data


@torch.no_grad()
def energy_at(model, y, t):
    """U(y, t) of one batch, nats per image, float64 on the CPU (no constant)."""
    return model(y, t, need=("energy",)).energy.double().cpu()


def neg_log_p(energy, constant):
    """-log p_t in nats per image from the network energy U and the normalization constant c: U + c.
    The one-shot NLL, the per-image files and the Python API's log_prob all go through here."""
    return energy + constant


@torch.no_grad()
def energies(model, data, t, batch_size=256, seed=0, stream=NOISE_STREAM, device=None, dtype=torch.float32):
    """Per-image U(x + sqrt(t) z, t) in nats (z keyed by dataset index); returns (indices, energies)."""
    data = ArrayData.wrap(data)
    all_idx, all_u = [], []
    for idx, x in data.batches(batch_size, device, dtype):
        if t > 0:
            x = x + math.sqrt(t) * indexed_normal(idx, data.shape, seed, stream, dtype, device)
        all_idx.append(torch.as_tensor(idx))
        all_u.append(energy_at(model, x, t))
    return torch.cat(all_idx), torch.cat(all_u)


@torch.no_grad()
def clean_energies(model, data, t, batch_size, device):
    """U(x, t) at the clean images x (no noise added), nats per image."""
    return torch.cat([energy_at(model, x, t) for _, x in ArrayData.wrap(data).batches(batch_size, device)])


def fit_anchor(data, max_images=None, min_var=None, shrink=False):
    """The data Gaussian N(mean, Cov) used by the 'gaussian' anchor (and as a baseline density).

    shrink: Ledoit-Wolf shrinkage (densities.ledoit_wolf), as for model.base gaussian."""
    data = ArrayData.wrap(data)
    n = len(data) if max_images is None else min(len(data), max_images)
    x = torch.cat([b for _, b in data.batches(4096, dtype=torch.float64, positions=np.arange(n))])
    if min_var is None:  # a quantization bin's variance for 8-bit data, a tiny floor otherwise
        min_var = 1 / (12 * 255**2) if data.quantization_bits == 8 else 1e-12
    return Gaussian.fit(x, min_var=min_var, shrink=shrink)


@torch.no_grad()
def normalization_constant(model, data, t_max=1e3, anchor="paper", batch_size=256, seed=0, device=None,
                           anchor_density=None):
    """c and its standard error (nats per image), so that U + c = -log p_t at every t."""
    if anchor not in ANCHORS:
        raise ValueError(f"unknown anchor '{anchor}'; expected one of {ANCHORS}")
    data = ArrayData.wrap(data)
    idx, u = energies(model, data, t_max, batch_size, seed, ANCHOR_STREAM, device)
    g = None
    if anchor == "gaussian":
        gauss = anchor_density or fit_anchor(data)
        _, g = energies(gauss, data, t_max, batch_size, seed, ANCHOR_STREAM, None, torch.float64)
    return constant_from_energies(u, data.d, t_max, anchor, g)


def constant_from_energies(u, d, t_max, anchor, g=None):
    """The constant's formula, shared by eval-nll and the end of training (engine/dist_eval.py): from the per-image
    network energies u_i = U(y_i, t_max) of the noisy anchor images y_i (and, for the 'gaussian' anchor, the anchor
    Gaussian's energies g_i = G(y_i) of the same images), c = mean_i c_i and its standard error, where
      paper:    c_i = (d/2) log(2 pi e t_max) - u_i
      gaussian: c_i = g_i - u_i."""
    if anchor == "paper":
        per_image = 0.5 * d * math.log(2 * math.pi * math.e * t_max) - u
    elif anchor == "gaussian":
        if g is None:
            raise ValueError("the gaussian anchor needs the anchor Gaussian's energies g")
        per_image = g - u
    else:
        raise ValueError(f"unknown anchor '{anchor}'; expected one of {ANCHORS}")
    return per_image.mean().item(), stderr(per_image)


def stderr(values):
    return (values.std() / math.sqrt(len(values))).item() if len(values) > 1 else float("nan")


@dataclass
class NLLResult:
    """An NLL with the protocol needed to publish it."""
    nats_per_dim: float
    bits_per_dim: float
    bits_per_dim_stderr: float
    log_p_db_per_dim: float
    t: float
    t_max: float
    anchor: str
    constant: float
    constant_stderr: float
    n_images: int
    d: int
    quantization_bits: int | None
    seed: int
    data: str
    data_fingerprint: str | None

    def to_dict(self):
        return asdict(self)


def one_shot_nll(model, data, t=0.0, t_max=1e3, anchor="paper", batch_size=256, seed=0, device=None,
                 constant=None, anchor_density=None, return_per_image=False):
    """The paper's protocol: c at t_max on the evaluation set, then mean U(x + sqrt(t) z, t) + c.

    At t = 0 on 8-bit data this is the plug-in NLL of the quantized images (+8 bits/dim); at t > 0 it is
    the cross-entropy of the noisy data, a continuous density (no +8).
    `constant=(c, se)` reuses a stored constant instead of recomputing it.
    """
    data = ArrayData.wrap(data)
    if constant is None:
        constant = normalization_constant(model, data, t_max, anchor, batch_size, seed, device, anchor_density)
    c, c_se = constant
    idx, u = energies(model, data, t, batch_size, seed, NOISE_STREAM, device)
    nll = neg_log_p(u, c)
    qbits = data.quantization_bits if t == 0 else None
    mean = nll.mean().item()
    se_bits = units.nats_to_bits(math.hypot(stderr(nll), c_se)) / data.d
    result = NLLResult(
        nats_per_dim=mean / data.d, bits_per_dim=units.bits_per_dim(mean, data.d, qbits),
        bits_per_dim_stderr=se_bits, log_p_db_per_dim=units.log_p_db_per_dim(mean, data.d),
        t=float(t), t_max=float(t_max), anchor=anchor, constant=c, constant_stderr=c_se, n_images=len(data),
        d=data.d, quantization_bits=qbits, seed=seed, data=data.name, data_fingerprint=data.fingerprint)
    return (result, idx, nll) if return_per_image else result
