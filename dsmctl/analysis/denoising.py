"""Denoising curve (paper Table 1): output PSNR of D(y, t) = y - t grad_y U against input PSNR.

Works for energy models (D from the gradient of the energy), score networks (DenoiserModel) and closed-form
densities alike. Noise is keyed by dataset index, so two models see exactly the same noisy images.
Output PSNR is computed per image, -10 log10(mean_pixels (D - x)^2), no clipping of D, and averaged over
images (with its standard error); the PSNR of the dataset-mean squared error is reported beside it.
"""
import math

import torch

from .. import units
from ..data.arrays import ArrayData
from ..nll.likelihood import stderr
from ..rng import indexed_normal

DENOISE_STREAM = 3
DEFAULT_PSNRS = (0.0, 10.0, 20.0, 30.0, 40.0)


def denoise_mse(model, data, t, batch_size=256, seed=0, device=None, dtype=torch.float32):
    """Per-image mean squared error of the denoiser at noise variance t (noise keyed by index)."""
    data = ArrayData.wrap(data)
    out = []
    for idx, x in data.batches(batch_size, device, dtype):
        y = x + math.sqrt(t) * indexed_normal(idx, data.shape, seed, DENOISE_STREAM, dtype, device)
        den = model(y, t, need=("denoised",)).denoised.detach()
        out.append((den - x).flatten(1).square().mean(1).double().cpu())
    return torch.cat(out)


def denoising_curve(model, data, psnrs=DEFAULT_PSNRS, batch_size=256, seed=0, device=None):
    """[{psnr_in, t, psnr_out, psnr_out_stderr, psnr_of_mean_mse}] over a grid of input PSNRs (dB)."""
    rows = []
    for p in psnrs:
        t = units.psnr_to_t(p)
        mse = denoise_mse(model, data, t, batch_size, seed, device)
        psnr_out = -10 * mse.clamp_min(1e-30).log10()
        rows.append({"psnr_in": float(p), "t": t, "psnr_out": psnr_out.mean().item(),
                     "psnr_out_stderr": stderr(psnr_out), "psnr_of_mean_mse": units.t_to_psnr(mse.mean().item())})
    return rows
