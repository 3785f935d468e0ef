"""Global RNG states (torch, CUDA, numpy, python) as plain tensors, gathered from every process.

Data order, flips, noise levels and noise draws are functions of (seed, step) and need none of this;
the global generators are saved anyway for anything else that draws from them, so that a resumed run
continues every stream exactly. Tensors only: a checkpoint loads with torch.load(weights_only=True).
"""
import math
import random

import numpy as np
import torch


def capture():
    """This process's RNG states as 1-D int64/float64 tensors."""
    out = {"torch": torch.get_rng_state().long()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state().long()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    out["numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    out["numpy_pos"] = torch.tensor([pos, has_gauss], dtype=torch.int64)
    out["numpy_gauss"] = torch.tensor([cached], dtype=torch.float64)
    version, internal, gauss = random.getstate()
    out["python"] = torch.tensor(internal, dtype=torch.int64)
    out["python_gauss"] = torch.tensor([math.nan if gauss is None else gauss], dtype=torch.float64)
    return out


def gather_all(acc):
    """{name: (world_size, n) tensor} on every process (a collective: every process must call it)."""
    from accelerate.utils import gather

    local = capture()
    if acc.num_processes == 1:
        return {k: v[None] for k, v in local.items()}
    return {k: gather(v[None].to(acc.device)).cpu() for k, v in sorted(local.items())}


def restore(states, rank):
    """Set this process's generators from row `rank` of gather_all()'s output; returns the names set."""
    restored = []
    if "torch" in states:
        torch.set_rng_state(states["torch"][rank].to(torch.uint8))
        restored.append("torch")
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"][rank].to(torch.uint8))
        restored.append("cuda")
    if "numpy" in states:
        pos, has_gauss = (int(v) for v in states["numpy_pos"][rank])
        np.random.set_state(("MT19937", states["numpy"][rank].numpy().astype(np.uint32), pos, has_gauss,
                             float(states["numpy_gauss"][rank][0])))
        restored.append("numpy")
    if "python" in states:
        gauss = float(states["python_gauss"][rank][0])
        random.setstate((3, tuple(int(v) for v in states["python"][rank]), None if math.isnan(gauss) else gauss))
        restored.append("python")
    return restored


def seed_all(seed, rank):
    """Distinct, reproducible global streams per process (model init is seeded separately)."""
    from ..rng import hash_seed

    s = hash_seed(seed, 13, rank)
    torch.manual_seed(s)
    np.random.seed(s % 2**32)
    random.seed(s)
