"""Noise keyed by dataset index, so results do not depend on batch size, order or number of processes."""
import torch


def indexed_normal(indices, shape, seed, stream=0, dtype=torch.float32, device=None):
    """One N(0, I) draw of `shape` per index, a pure function of (seed, stream, index)."""
    return _indexed(torch.randn, indices, shape, seed, stream).to(dtype=dtype, device=device)


def indexed_uniform(indices, shape, seed, stream=0, dtype=torch.float32, device=None):
    """One U[0, 1) draw of `shape` per index, a pure function of (seed, stream, index)."""
    return _indexed(torch.rand, indices, shape, seed, stream).to(dtype=dtype, device=device)


def _indexed(sampler, indices, shape, seed, stream):
    out = torch.empty(len(indices), *shape)
    g = torch.Generator()
    for row, i in enumerate(indices):
        g.manual_seed(hash_seed(seed, stream, int(i)))
        out[row] = sampler(shape, generator=g)
    return out


def hash_seed(*parts):
    """Mix integers into a 63-bit seed (splitmix64 steps), so nearby seeds give unrelated streams."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 29
    return x & 0x7FFFFFFFFFFFFFFF
