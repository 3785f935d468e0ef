"""Radial slices of a log-density (paper Fig. 1): log p_t(r sqrt(d) e) against r, for a fixed direction e."""
import torch

from .. import units


@torch.no_grad()
def radial_log_p(model, d, t, radii, constant=0.0, direction_seed=0, dtype=torch.float32):
    """log p_t in dB/dim at y = r sqrt(d) e, e a random unit vector; `constant` normalizes a network energy."""
    g = torch.Generator().manual_seed(direction_seed)
    e = torch.randn(d, generator=g, dtype=torch.float64)
    e = e / e.norm()
    radii = torch.as_tensor(radii, dtype=torch.float64)
    y = (radii[:, None] * d**0.5 * e).to(dtype)
    energy = model(y, t, need=("energy",)).energy.double() + constant
    return units.log_p_db_per_dim(energy, d)
