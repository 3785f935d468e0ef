"""Evaluation across processes: each takes a contiguous shard of dataset positions, per-image results
are gathered with their dataset indices, and the union is checked to hold every image exactly once.

Noise is keyed by dataset index (dsmctl/rng.py), so the result does not depend on the number of
processes. With one process this is exactly likelihood.normalization_constant.
"""
import math

import numpy as np
import torch

from ..nll.likelihood import ANCHOR_STREAM, constant_from_energies, energies, fit_anchor
from .errors import TrainError
from .precision import exact_fp32


def shard(n, rank, world):
    """Contiguous positions of process `rank` (sizes differ by at most one)."""
    return np.array_split(np.arange(n), world)[rank]


def gather_per_image(acc, n, idx, *values):
    """Gather (dataset index, values...) from every process; returns them sorted by index, padding removed."""
    idx = torch.as_tensor(idx, dtype=torch.float64)
    cols = torch.stack([idx, *[torch.as_tensor(v, dtype=torch.float64) for v in values]], 1)
    world = 1 if acc is None else acc.num_processes
    if world > 1:
        from accelerate.utils import gather

        width = math.ceil(n / world)
        pad = torch.full((width - len(cols), cols.shape[1]), -1.0, dtype=torch.float64)
        cols = gather(torch.cat([cols, pad]).to(acc.device)).cpu()
        cols = cols[cols[:, 0] >= 0]
    cols = cols[cols[:, 0].argsort()]
    return cols[:, 0].long(), [cols[:, i] for i in range(1, cols.shape[1])]


@torch.no_grad()
def normalization_constant(acc, model, data, t_max, anchor, batch_size, seed):
    """(c, stderr) as likelihood.normalization_constant gives it (the same formula: likelihood.constant_from_energies),
    the energies computed on shards of `data` by all processes and gathered by dataset index."""
    world, rank = (1, 0) if acc is None else (acc.num_processes, acc.process_index)
    device = None if acc is None else acc.device
    part = data.subset(shard(len(data), rank, world))
    with exact_fp32():
        idx, u = energies(model, part, t_max, batch_size, seed, ANCHOR_STREAM, device)
        if anchor == "gaussian":  # fitted on the whole evaluation set, identically on every process
            _, g = energies(fit_anchor(data), part, t_max, batch_size, seed, ANCHOR_STREAM, None, torch.float64)
        else:
            g = torch.zeros_like(u)
    idx, (u, g) = gather_per_image(acc, len(data), idx, u, g)
    expected = np.sort(data.index(np.arange(len(data))))
    if len(idx) != len(expected) or not np.array_equal(idx.numpy(), expected):
        raise TrainError(f"sharded evaluation covered {len(idx)} images ({len(np.unique(idx.numpy()))} distinct), "
                         f"expected each of {len(data)} exactly once")
    return constant_from_energies(u, data.d, t_max, anchor, g if anchor == "gaussian" else None)
