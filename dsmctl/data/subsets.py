"""Training subsets: first N / last N (the paper's generalization protocol) and seeded disjoint halves."""
import hashlib

import numpy as np

from .cache import DataError


def subset_positions(n_total, spec):
    """'first:N' | 'last:N' | 'random:N:SEED:a|b' -> sorted positions (a and b are disjoint)."""
    parts = str(spec).split(":")
    try:
        kind, n = parts[0], int(parts[1])
        if kind == "first" and len(parts) == 2:
            pos = np.arange(n)
        elif kind == "last" and len(parts) == 2:
            pos = np.arange(n_total - n, n_total)
        elif kind == "random" and len(parts) == 4 and parts[3] in ("a", "b"):
            perm = np.random.default_rng(int(parts[2])).permutation(n_total)
            pos = np.sort(perm[:n] if parts[3] == "a" else perm[n:2 * n])
            if 2 * n > n_total:
                raise IndexError
        else:
            raise ValueError
    except (ValueError, IndexError):
        raise DataError(f"data.subset {spec!r}: expected first:N, last:N or random:N:SEED:a|b with 2N <= {n_total}") from None
    if n <= 0 or n > n_total:
        raise DataError(f"data.subset {spec!r}: N must be in 1..{n_total}")
    return pos


def positions_hash(pos):
    return hashlib.sha256(np.asarray(pos, dtype=np.int64).tobytes()).hexdigest()[:16]


def subset(data, spec):
    pos = subset_positions(len(data), spec)
    out = data.subset(pos, name=f"{data.name}[{spec}]")
    out.fingerprint = f"{data.fingerprint}[{spec}:{positions_hash(pos)}]"
    return out
