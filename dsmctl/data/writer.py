"""Stream split readers into a prepared directory: atomic, resumable, idempotent.

Work happens in `.<out>.partial/` beside the output, under the lock `.<out>.lock` (removed when done): each
split's .npy file is created at its final size with the space allocated up front (posix_fallocate), so a
full disk is found before the long part starts, and is filled chunk by chunk with plain writes (never
through a memory map: a full disk then raises an error instead of killing the process with SIGBUS); after
every chunk the file is synced and progress.json records how many items are safely on disk, so a re-run of
the same request continues where it stopped. Only when all splits are written and hashed is manifest.json
written and the folder renamed to `out`: an interrupted prepare never leaves a directory that looks
complete (is_prepared checks manifest.json).

A failure that a re-run cannot fix by continuing (bad data: NaN pixels, a damaged image; a full disk)
removes the partial folder; an interruption keeps it. `--force` replaces an existing `out` with two renames
(out -> .<out>.old-PID, partial -> out); recover() finishes or undoes that when a run was killed between them.
"""
import errno
import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np

from ..budget import gib, need_memory
from ..fileio import (LockBusy, WriteError, disk_errors, disk_reason, fsync_dir, hold_lock, owner_text, pid_alive,
                      write_json)
from .cache import (FORMAT, MANIFEST, DataError, array_sha256, combined_fingerprint, is_prepared,
                    npy_data_offset, read_manifest, sample_sha256)
from .readers import ArrayReader, check_finite, check_reader

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
    for name, reader in readers.items():
        check_reader(reader, getattr(reader, "where", name))
    check_sizes(out, readers)
    key = request_key(request if request is not None else {"info": info, "splits": {
        k: [r.n, list(r.shape), str(r.dtype)] for k, r in readers.items()}})
    if is_prepared(out):
        try:
            manifest = read_manifest(out)
        except DataError as e:
            if not force:
                raise DataError(f"{e} (or pass --force to replace {out})") from None
            manifest = {}
        if manifest.get("request_sha256") == key and not force:
            return {**manifest, "reused": True}
        if not force and request is not None and manifest.get("request_sha256") is not None:
            raise DataError(f"{out}: already holds a different prepared dataset (source {manifest.get('source')}); "
                            f"pass --force to replace it, or choose another --out")
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: exists, is not empty and is not a prepared dataset; choose another --out")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{out}: not writable ({disk_reason(e) or e.strerror or e}: cannot create {out.parent})") from None
    lock = _lock(out)
    tmp = out.parent / f".{out.name}.partial"
    intact = "(the previous copy is intact)" if is_prepared(out) else "(nothing was installed)"
    try:
        with disk_errors(out, intact):
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
    except (DataError, WriteError) as e:  # bad data or a full disk: continuing would not help; free the space
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, WriteError):
            raise WriteError(f"{e.reason} writing {out} {intact}", e.reason) from None
        raise
    finally:
        _unlock(lock)
    return manifest


def _example_bytes(reader):
    return math.prod(int(v) for v in reader.shape) * np.dtype(reader.dtype).itemsize


def check_sizes(out, readers):
    """Refuse, before anything is created, splits that the disk under `out` cannot hold (space already allocated
    by a partial directory of an interrupted run counts as free) or one example that memory cannot hold while it
    is converted (a --size of 100000 pixels)."""
    biggest = max(readers.values(), key=_example_bytes)
    need_memory(4 * _example_bytes(biggest), f"{getattr(biggest, 'where', out)}: one example of shape "
                f"{tuple(biggest.shape)} ({np.dtype(biggest.dtype)})", None, "to convert and write")
    need = sum(r.n * _example_bytes(r) + (8 * r.n if r.has_labels else 0) for r in readers.values())
    probe = out.parent.resolve()
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        return  # not writable: the write names that (a read-only place is no "disk full")
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return  # the writing itself will name the problem
    partial = out.parent / f".{out.name}.partial"
    if partial.is_dir() and not partial.is_symlink():
        free += sum(p.stat().st_blocks * 512 for p in partial.iterdir() if p.is_file() and not p.is_symlink())
    if need > free:
        shapes = ", ".join(f"{k} {r.n:,} x {tuple(r.shape)}" for k, r in readers.items())
        raise DataError(f"{out}: the prepared arrays need {gib(need)} ({shapes}), {probe} has {gib(free)} free: "
                        f"not enough space left on device; expected a smaller --size or --limit, or another --out")


def _lock(out):
    """Hold `.<out>.lock` (fileio.hold_lock); the file is removed again by _unlock."""
    path = out.parent / f".{out.name}.lock"
    try:
        return hold_lock(path, owner=owner_text())
    except LockBusy as e:
        raise DataError(f"{out}: another `dsmctl prepare` is writing it right now "
                        f"({f'{e.owner}; ' if e.owner else ''}{path} is locked)") from None
    except OSError as e:
        raise DataError(f"{out}: not writable ({disk_reason(e) or e.strerror or e}: cannot create files in "
                        f"{out.parent})") from None


def _unlock(lock):
    lock.release(remove=True)  # still holding it while removing: whoever opened this file before re-checks


def recover(out):
    """Finish or undo a `prepare --force` that was killed between its two renames (out -> .<out>.old-PID,
    partial -> out), when that PID is gone: install the finished new copy if the partial folder holds one
    (its manifest is written last), else restore the old copy. Also removes an old copy left after a
    complete replacement. Returns a line saying what was done, or None."""
    out = Path(out)
    parent = out.parent
    try:
        olds = sorted((p for p in parent.iterdir() if p.name.startswith(f".{out.name}.old-")
                       and p.name.rpartition("-")[2].isdigit() and not pid_alive(int(p.name.rpartition("-")[2]))),
                      key=lambda p: p.stat().st_mtime)
    except OSError:
        return None
    if not olds:
        return None
    try:
        lock = _lock(out)
    except DataError:
        return None  # someone else is working on it right now
    try:
        partial = parent / f".{out.name}.partial"
        if out.exists():
            msg = f"{out}: removed {', '.join(p.name for p in olds)}, the old copy an interrupted `prepare --force` " \
                  f"had already replaced"
        elif is_prepared(partial) and not (partial / PROGRESS).exists():
            partial.rename(out)
            msg = f"{out}: installed the finished new copy left by an interrupted `prepare --force` ({partial.name})"
        else:
            olds[-1].rename(out)
            msg = f"{out}: restored the previous copy from {olds[-1].name} (an interrupted `prepare --force` had " \
                  f"moved it aside)"
            olds = olds[:-1]
        for p in olds:
            shutil.rmtree(p, ignore_errors=True)
        fsync_dir(parent)
    finally:
        _unlock(lock)
    return msg


def _open_partial(tmp, key, readers, progress):
    """Resume a partial directory of the same request, else start a fresh one."""
    state_file = tmp / PROGRESS
    if tmp.exists():
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError, RecursionError):
            state = {}
        same = isinstance(state, dict) and state.get("request_sha256") == key and all(
            _done(state, k, r) is not None and _fits(tmp, k, r) for k, r in readers.items())
        if same:
            done = sum(s["done"] for s in state["splits"].values())
            if progress and done:
                progress.log(f"resuming {tmp.name}: {done:,} items already written")
            return state
        shutil.rmtree(tmp) if tmp.is_dir() and not tmp.is_symlink() else tmp.unlink()
    tmp.mkdir()
    state = {"request_sha256": key, "splits": {k: {"n": r.n, "done": 0} for k, r in readers.items()}}
    for name, reader in readers.items():
        _create_npy(tmp / f"{name}.npy", reader.dtype, (reader.n, *reader.shape))
        if reader.has_labels:
            _create_npy(tmp / f"{name}_labels.npy", np.int64, (reader.n,))
    write_json(state_file, state)
    return state


def _done(state, name, reader):
    """Items of split `name` already on disk according to progress.json, or None if it does not fit."""
    s = state.get("splits", {}).get(name) if isinstance(state.get("splits"), dict) else None
    if not isinstance(s, dict) or s.get("n") != reader.n or not isinstance(s.get("done"), int):
        return None
    return s["done"] if 0 <= s["done"] <= reader.n else None


def _create_npy(path, dtype, shape):
    """An .npy file at its final size, the data space allocated now: a full disk fails here, at the start."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                 "fortran_order": False, "shape": tuple(shape)})
        offset = f.tell()
        if nbytes:
            try:
                os.posix_fallocate(f.fileno(), offset, nbytes)
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
        f.truncate(offset + nbytes)
        f.flush()
        os.fsync(f.fileno())


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


def _pwrite(fd, array, offset):
    view = memoryview(np.ascontiguousarray(array)).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _fill(tmp, name, reader, state, progress):
    split_state = state["splits"][name]
    n, start = reader.n, split_state["done"]
    if start >= n:
        return
    where = getattr(reader, "where", name)
    x_path, y_path = tmp / f"{name}.npy", tmp / f"{name}_labels.npy"
    x_off = npy_data_offset(x_path)
    y_off = npy_data_offset(y_path) if reader.has_labels else None
    row_bytes = max(1, int(np.prod(reader.shape)) * np.dtype(reader.dtype).itemsize)
    chunk = max(1, min(8192, CHUNK_BYTES // row_bytes))
    if progress:
        progress.start(f"write {name}", n, start)
    with open(x_path, "r+b") as fx, open(y_path if reader.has_labels else os.devnull, "r+b") as fy:
        for lo in range(start, n, chunk):
            hi = min(n, lo + chunk)
            x, y = reader.read(lo, hi)
            if x.shape != (hi - lo, *reader.shape):
                raise DataError(f"{where}: items {lo}..{hi} came out with shape {x.shape[1:]}, expected {reader.shape}")
            check_finite(x, f"{where} items {lo}..{hi - 1}")
            _pwrite(fx.fileno(), np.asarray(x, dtype=reader.dtype), x_off + lo * row_bytes)
            os.fsync(fx.fileno())
            if reader.has_labels:
                _pwrite(fy.fileno(), np.asarray(y, dtype=np.int64), y_off + lo * 8)
                os.fsync(fy.fileno())
            split_state["done"] = hi
            write_json(tmp / PROGRESS, state)
            if progress:
                progress.advance(f"write {name}", hi, n)


def _finish_split(tmp, name, reader, progress):
    x = np.load(tmp / f"{name}.npy", mmap_mode="r")
    entry = {"file": f"{name}.npy", "n": int(len(x)), "shape": list(x.shape[1:]), "dtype": str(x.dtype),
             "sha256": array_sha256(x, progress=progress and (lambda d, t: progress.advance(f"hash {name}", d, t))),
             "bytes": os.path.getsize(tmp / f"{name}.npy"), "sample_sha256": sample_sha256(tmp / f"{name}.npy")}
    if reader.has_labels:
        y = np.load(tmp / f"{name}_labels.npy", mmap_mode="r")
        entry["labels"] = f"{name}_labels.npy"
        entry["labels_sha256"] = array_sha256(y)
        entry["labels_bytes"] = os.path.getsize(tmp / entry["labels"])
        entry["labels_sample_sha256"] = sample_sha256(tmp / entry["labels"])
    return entry


def _install(tmp, out):
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
        tmp.rename(out)  # a kill between these two renames is finished or undone by recover() on the next run
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)
    fsync_dir(out.parent)


def write_prepared(out, splits, labels=None, info=None, request=None, force=True, progress=None):
    """Write in-memory arrays {split: array} atomically to directory `out`; returns the manifest."""
    readers = {name: ArrayReader(np.asarray(a), (labels or {}).get(name), where=f"{out}:{name}")
               for name, a in splits.items()}
    return write_splits(out, readers, info or {}, request=request, force=force, progress=progress)
