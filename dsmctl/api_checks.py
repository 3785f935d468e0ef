"""Argument checks and conversions of the Python API (api.py): one-line ValueErrors naming the argument."""
import numpy as np
import torch

from .data.arrays import ArrayData


def on_8_bit_grid(data, what):
    """8-bit images as uint8 ArrayData (float images on the grid k/255 are converted back; indices 0..N-1)."""
    if data.quantization_bits == 8:
        return data
    grid = data.batch(np.arange(len(data)), dtype=torch.float64) * 255
    if (grid - grid.round()).abs().max() > 1e-3 or grid.min() < 0 or grid.max() > 255:
        raise ValueError(f"x: protocol='{what}' on 8-bit data needs images on the 8-bit grid (k/255), these are not")
    return ArrayData(grid.round().to(torch.uint8).numpy(), name=data.name)


def is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def count(value, name, lo=1):
    if not is_int(value) or value < lo:
        raise ValueError(f"{name}={value!r}: expected an integer >= {lo}")
    return int(value)


def batch(batch_size):
    if not is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: expected an integer >= 1")
    return int(batch_size)


def noise_level(t):
    if isinstance(t, torch.Tensor) and t.numel() == 1:
        t = t.item()
    from .units import check_t

    label = f"t={t!r} (PSNR p dB is t = 10^(-p/10))"
    return check_t(t if isinstance(t, (int, float, np.floating, np.integer)) else None, label)
