"""Training subsets: first N / last N (the paper's generalization protocol) and seeded disjoint halves.

A run trained on a subset records the chosen dataset indices (run_dir/subset_indices.npy) and their
sha256, so two runs meant to be disjoint can be checked to be so (check_disjoint_runs).
"""
import hashlib
import os
from pathlib import Path

import numpy as np

from ..recipe_yaml import show
from .cache import DataError, is_prepared, read_manifest

INDICES_FILE = "subset_indices.npy"


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
        raise DataError(f"data.subset {show(spec)}: expected first:N, last:N or random:N:SEED:a|b with 2N <= {n_total}") from None
    if n <= 0 or n > n_total:
        raise DataError(f"data.subset {show(spec)}: N must be in 1..{n_total}")
    return pos


def partner(spec):
    """The subset meant to be disjoint from `spec`: first:N <-> last:N, random:N:SEED:a <-> b."""
    parts = str(spec).split(":")
    if parts[0] in ("first", "last") and len(parts) == 2:
        return f"{'last' if parts[0] == 'first' else 'first'}:{parts[1]}"
    if parts[0] == "random" and len(parts) == 4 and parts[3] in ("a", "b"):
        return ":".join(parts[:3] + ["b" if parts[3] == "a" else "a"])
    raise DataError(f"data.subset {show(spec)}: expected first:N, last:N or random:N:SEED:a|b")


def positions_hash(pos):
    return positions_sha256(pos)[:16]


def positions_sha256(pos):
    return hashlib.sha256(np.asarray(pos, dtype=np.int64).tobytes()).hexdigest()


def assert_disjoint(a, b, what="subsets"):
    common = np.intersect1d(np.asarray(a), np.asarray(b))
    if len(common):
        raise DataError(f"{what} are not disjoint: {len(common)} shared indices (first: {common[:5].tolist()})")


def check_disjoint(n_total, spec_a, spec_b):
    """Positions of two subset specs of a split of n_total items; DataError if they share any index."""
    a, b = subset_positions(n_total, spec_a), subset_positions(n_total, spec_b)
    assert_disjoint(a, b, f"data.subset {spec_a!r} and {spec_b!r} of {n_total} items")
    return a, b


def subset(data, spec):
    pos = subset_positions(len(data), spec)
    out = data.subset(pos, name=f"{data.name}[{spec}]")
    out.fingerprint = f"{data.fingerprint}[{spec}:{positions_hash(out.indices)}]"
    out.subset_spec = spec
    return out


def exclude_labels(data, labels, key="data.exclude_labels"):
    """The view of `data` without the examples whose label is in `labels` (leave-one-class-out training)."""
    if not labels:
        return data
    if data.labels is None:
        raise DataError(f"{key} {list(labels)}: {data.name} has no labels; expected a labelled split (e.g. a prepared "
                        "fashion-mnist, mnist or cifar10 source)")
    own = np.asarray(data.labels)[data.index(np.arange(len(data)))]
    keep = np.flatnonzero(~np.isin(own, np.asarray(labels, dtype=np.int64)))
    if len(keep) == len(data) or len(keep) == 0:
        raise DataError(f"{key} {list(labels)}: {'no' if len(keep) == len(data) else 'every'} example of {data.name} "
                        f"has such a label; expected class numbers present in it (it has {sorted(set(own.tolist()))[:20]})")
    tag = "-".join(str(v) for v in labels)
    out = data.subset(keep, name=f"{data.name}[no {tag}]")
    out.fingerprint = f"{data.fingerprint}[no {tag}:{positions_hash(out.indices)}]"
    out.subset_spec = getattr(data, "subset_spec", None)
    return out


def record_subset(run_dir, data):
    """Write the dataset indices of a subset to run_dir/subset_indices.npy; returns {spec, n, file, sha256}."""
    if data.indices is None:
        return None
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{INDICES_FILE}.tmp"
    with open(tmp, "wb") as f:
        np.save(f, data.indices.astype(np.int64))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, run_dir / INDICES_FILE)
    return {"spec": getattr(data, "subset_spec", None), "n": int(len(data.indices)), "file": INDICES_FILE,
            "sha256": positions_sha256(data.indices)}


def check_disjoint_runs(run_a, run_b):
    """Load two runs' recorded subset indices; DataError if either is missing or they overlap."""
    idx = []
    for run in (run_a, run_b):
        path = Path(run) / INDICES_FILE
        if not path.is_file():
            raise DataError(f"{path}: missing; the run was not trained on a data.subset")
        idx.append(np.load(path, allow_pickle=False))
    assert_disjoint(idx[0], idx[1], f"the training subsets of {run_a} and {run_b}")
    return idx


def training_data_info(data_cfg, data):
    """What a run records about its training data: source, split, subset + indices hash, fingerprints, flips."""
    info = {"source": str(data_cfg.source), "split": data_cfg.train_split, "subset": data_cfg.subset,
            "fingerprint": data.fingerprint, "n": len(data), "hflip": data_cfg.hflip}
    if getattr(data_cfg, "exclude_labels", ()):
        info["exclude_labels"] = list(data_cfg.exclude_labels)
    if data.indices is not None:
        info["subset_indices_sha256"] = positions_sha256(data.indices)
        info["subset_indices_file"] = INDICES_FILE
    if is_prepared(data_cfg.source):
        manifest = read_manifest(data_cfg.source)
        info["dataset_fingerprint"] = manifest.get("fingerprint")
        info["variant"] = manifest.get("variant")
    return info
