"""Stream split readers into a prepared directory: atomic, resumable, idempotent.

Work happens in `.<out>.partial/` beside the output: each split is preallocated as a .npy memmap and
filled chunk by chunk; after every chunk the memmap is flushed and progress.json records how many
items are safely on disk, so a re-run of the same request continues where it stopped. Only when all
splits are written and hashed is manifest.json written and the folder renamed to `out`: an
interrupted prepare never leaves a directory that looks complete (is_prepared checks manifest.json).
"""
import fcntl
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from ..fileio import fsync_dir, write_json
from .cache import (FORMAT, MANIFEST, DataError, array_sha256, combined_fingerprint, is_prepared,
                    read_manifest)
from .readers import ArrayReader

CHUNK_BYTES = 32 << 20
PROGRESS = "progress.json"


def request_key(request):
    return hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()


def write_splits(out, readers, info, request=None, force=False, progress=None):
    """Write {split: reader} to `out`; returns the manifest (with "reused": True if `out` already held it).

    `request` identifies what is being prepared (source, options, source signature); the same request
    twice is a no-op, and only the same request resumes an interrupted partial directory.
    """
    out = Path(out)
    key = request_key(request if request is not None else {"info": info, "splits": {
        k: [r.n, list(r.shape), str(r.dtype)] for k, r in readers.items()}})
    if is_prepared(out):
        manifest = read_manifest(out)
        if manifest.get("request_sha256") == key and not force:
            return {**manifest, "reused": True}
        if not force and request is not None and manifest.get("request_sha256") is not None:
            raise DataError(f"{out}: already holds a different prepared dataset (source {manifest.get('source')}); "
                            f"pass --force to replace it, or choose another --out")
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: exists, is not empty and is not a prepared dataset; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = _lock(out)
    try:
        tmp = out.parent / f".{out.name}.partial"
        state = _open_partial(tmp, key, readers, progress)
        manifest = {"format": FORMAT, **info, "request_sha256": key, "splits": {}}
        for name, reader in readers.items():
            _fill(tmp, name, reader, state, progress)
        for name, reader in readers.items():
            manifest["splits"][name] = _finish_split(tmp, name, reader, progress)
        manifest["fingerprint"] = combined_fingerprint(
            {k: v["sha256"] for k, v in manifest["splits"].items()},
            {k: v["labels_sha256"] for k, v in manifest["splits"].items() if "labels_sha256" in v})
        manifest["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        (tmp / PROGRESS).unlink()
        write_json(tmp / MANIFEST, manifest)
        _install(tmp, out)
    finally:
        _unlock(lock)
    return manifest


def _lock(out):
    path = out.parent / f".{out.name}.lock"
    f = open(path, "w")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise DataError(f"{out}: another `dsmctl prepare` is writing it right now ({path} is locked)") from None
    return f


def _unlock(f):
    fcntl.flock(f, fcntl.LOCK_UN)
    f.close()


def _open_partial(tmp, key, readers, progress):
    """Resume a partial directory of the same request, else start a fresh one."""
    state_file = tmp / PROGRESS
    if tmp.exists():
        try:
            state = json.loads(state_file.read_text())
        except (OSError, json.JSONDecodeError):
            state = {}
        same = state.get("request_sha256") == key and all(
            state.get("splits", {}).get(k, {}).get("n") == r.n and _fits(tmp, k, r) for k, r in readers.items())
        if same:
            done = sum(s["done"] for s in state["splits"].values())
            if progress and done:
                progress.log(f"resuming {tmp.name}: {done:,} items already written")
            return state
        shutil.rmtree(tmp)
    tmp.mkdir()
    state = {"request_sha256": key, "splits": {k: {"n": r.n, "done": 0} for k, r in readers.items()}}
    for name, reader in readers.items():
        np.lib.format.open_memmap(tmp / f"{name}.npy", mode="w+", dtype=reader.dtype,
                                  shape=(reader.n, *reader.shape)).flush()
        if reader.has_labels:
            np.lib.format.open_memmap(tmp / f"{name}_labels.npy", mode="w+", dtype=np.int64, shape=(reader.n,)).flush()
    write_json(state_file, state)
    return state


def _fits(tmp, name, reader):
    """The partial arrays of a split exist with the expected shape and dtype."""
    try:
        x = np.load(tmp / f"{name}.npy", mmap_mode="r")
        ok = x.shape == (reader.n, *reader.shape) and x.dtype == reader.dtype
        if reader.has_labels:
            ok = ok and np.load(tmp / f"{name}_labels.npy", mmap_mode="r").shape == (reader.n,)
        return ok
    except (OSError, ValueError):
        return False


def _fill(tmp, name, reader, state, progress):
    split_state = state["splits"][name]
    n, start = reader.n, split_state["done"]
    if start >= n:
        return
    x_out = np.load(tmp / f"{name}.npy", mmap_mode="r+")
    y_out = np.load(tmp / f"{name}_labels.npy", mmap_mode="r+") if reader.has_labels else None
    row_bytes = max(1, int(np.prod(reader.shape)) * np.dtype(reader.dtype).itemsize)
    chunk = max(1, min(8192, CHUNK_BYTES // row_bytes))
    if progress:
        progress.start(f"write {name}", n, start)
    for lo in range(start, n, chunk):
        hi = min(n, lo + chunk)
        x, y = reader.read(lo, hi)
        if x.shape != (hi - lo, *reader.shape):
            raise DataError(f"{name}: items {lo}..{hi} came out with shape {x.shape[1:]}, expected {reader.shape}")
        x_out[lo:hi] = x
        if y_out is not None:
            y_out[lo:hi] = y
            y_out.flush()
        x_out.flush()
        split_state["done"] = hi
        write_json(tmp / PROGRESS, state)
        if progress:
            progress.advance(f"write {name}", hi, n)
    del x_out, y_out


def _finish_split(tmp, name, reader, progress):
    x = np.load(tmp / f"{name}.npy", mmap_mode="r")
    entry = {"file": f"{name}.npy", "n": int(len(x)), "shape": list(x.shape[1:]), "dtype": str(x.dtype),
             "sha256": array_sha256(x, progress=progress and (lambda d, t: progress.advance(f"hash {name}", d, t)))}
    if reader.has_labels:
        y = np.load(tmp / f"{name}_labels.npy", mmap_mode="r")
        entry["labels"] = f"{name}_labels.npy"
        entry["labels_sha256"] = array_sha256(y)
    return entry


def _install(tmp, out):
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)
    fsync_dir(out.parent)


def write_prepared(out, splits, labels=None, info=None, request=None, force=True, progress=None):
    """Write in-memory arrays {split: array} atomically to directory `out`; returns the manifest."""
    readers = {name: ArrayReader(np.asarray(a), (labels or {}).get(name), where=f"{out}:{name}")
               for name, a in splits.items()}
    return write_splits(out, readers, info or {}, request=request, force=force, progress=progress)
