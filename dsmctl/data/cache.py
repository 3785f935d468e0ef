"""The prepared cache: one contiguous array per split (memory-mapped when read) plus manifest.json.

Layout of a prepared directory:
  manifest.json        format, source, variant, options, transform, labels (their convention),
                       splits {name: {file, n, shape, dtype, sha256, labels, labels_sha256}},
                       fingerprint (sha256 over all splits' pixels and labels), request_sha256 (what was
                       asked for: source, options, source signature), and for synthetic data the density spec
  <split>.npy          N x C x H x W uint8 (8-bit images) or float32 (continuous data; N x D vectors too)
  <split>_labels.npy   optional int64 labels
A directory is complete only once manifest.json exists: it is written last, and the whole directory is
built under a temporary name and renamed into place (writer.py).

The manifest is data from outside like any file: read_manifest checks its keys and types, and every file it
names must lie inside the directory (no "..", no absolute path, no symlink out). Each split also records
its file's size ("bytes") and a sampled hash ("sample_sha256": 64 blocks of 64 KiB spread over the file),
so that `train` can re-check the cache cheaply before it trusts it (check_prepared: quick | full | skip).
"""
import hashlib
import math
import json
import os
from pathlib import Path

import numpy as np

from ..recipe_yaml import show
from .arrays import ArrayData

FORMAT = "dsmctl-prepared/1"
MANIFEST = "manifest.json"
DTYPES = ("uint8", "float32")
SAMPLE_BLOCKS, SAMPLE_BLOCK = 64, 64 << 10  # the sampled hash reads at most 4 MiB of each file
VERIFY_MODES = ("quick", "full", "skip")


class DataError(ValueError):
    """Bad or missing data; the message is one line naming the file and what was expected."""


def array_sha256(array, chunk_rows=None, progress=None):
    """sha256 over dtype, shape and bytes, streamed so memory-mapped arrays are never loaded whole."""
    h = hashlib.sha256(f"{array.dtype.str}{tuple(array.shape)}".encode())
    rows = chunk_rows or max(1, (64 << 20) // max(1, array[0].nbytes if len(array) else 1))
    for start in range(0, len(array), rows):
        h.update(np.ascontiguousarray(array[start:start + rows]).tobytes())
        if progress:
            progress(min(len(array), start + rows), len(array))
    return h.hexdigest()


def combined_fingerprint(split_hashes, label_hashes=None):
    """One sha256 over every split's pixels (and labels, where there are any)."""
    h = hashlib.sha256()
    for name in sorted(split_hashes):
        h.update(f"{name}:{split_hashes[name]};".encode())
    for name in sorted(label_hashes or {}):
        h.update(f"{name}.labels:{label_hashes[name]};".encode())
    return h.hexdigest()


def is_prepared(path):
    return (Path(path) / MANIFEST).is_file()


def read_manifest(path):
    """The manifest of a prepared directory, its keys and types checked and its file names confined to it."""
    path = Path(path)
    where = path / MANIFEST
    try:
        manifest = json.loads(where.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: not a prepared dataset (no {MANIFEST}); run `dsmctl prepare SOURCE --out {path}`") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise DataError(f"{where}: not valid JSON; re-run `dsmctl prepare`") from None
    except OSError as e:
        raise DataError(f"{where}: unreadable ({e.strerror or e})") from None
    if not isinstance(manifest, dict):
        raise DataError(f"{where}: a JSON {type(manifest).__name__}; expected an object")
    if manifest.get("format") != FORMAT:
        raise DataError(f"{where}: unknown format {manifest.get('format')!r}; expected {FORMAT}")
    splits = manifest.get("splits")
    if not isinstance(splits, dict) or not splits:
        got = "missing" if splits is None else f"a {type(splits).__name__}" if not isinstance(splits, dict) else "empty"
        raise DataError(f"{where}: 'splits' is {got}; expected an object {{split name: entry}}; re-run `dsmctl prepare`")
    for name, entry in splits.items():
        _check_entry(path, where, name, entry)
    return manifest


def _bad(where, key, value, expected):
    shown = repr(value) if isinstance(value, str) else json.dumps(value)
    return DataError(f"{where}: {key} is {shown[:80]}; expected {expected}; re-run `dsmctl prepare`")


def _check_entry(path, where, name, entry):
    key = f"splits.{name}"
    if not isinstance(entry, dict):
        raise _bad(where, key, entry, "an object {file, n, shape, dtype, sha256}")
    for field in ("file", "n", "shape", "dtype", "sha256"):
        if field not in entry:
            raise DataError(f"{where}: {key} has no '{field}'; expected file, n, shape, dtype and sha256; "
                            f"re-run `dsmctl prepare`")
    inside(path, where, f"{key}.file", entry["file"])
    if entry.get("labels") is not None:
        inside(path, where, f"{key}.labels", entry["labels"])
    n, shape = entry["n"], entry["shape"]
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise _bad(where, f"{key}.n", n, "a positive integer (the number of examples)")
    if (not isinstance(shape, list) or not 1 <= len(shape) <= 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)):
        raise _bad(where, f"{key}.shape", shape, "1 to 3 positive integers (C, H, W or D)")
    if entry["dtype"] not in DTYPES:
        raise _bad(where, f"{key}.dtype", entry["dtype"], " or ".join(DTYPES))
    for field in ("sha256", "labels_sha256", "sample_sha256", "labels_sample_sha256"):
        if field in entry and not isinstance(entry[field], str):
            raise _bad(where, f"{key}.{field}", entry[field], "a hex string")
    for field in ("bytes", "labels_bytes"):
        if field in entry and (not isinstance(entry[field], int) or isinstance(entry[field], bool) or entry[field] < 0):
            raise _bad(where, f"{key}.{field}", entry[field], "a file size in bytes")


def inside(path, where, key, value):
    """path / value, refused unless `value` is a relative name of a file inside `path` (symlinks resolved)."""
    if not isinstance(value, str) or not value:
        raise _bad(where, key, value, f"the name of a file in {path}")
    rel = Path(value)
    if rel.is_absolute() or ".." in rel.parts or "\\" in value or "\0" in value:
        raise DataError(f"{where}: {key} {show(value, width=400)} points outside {path}; expected the name of a file "
                        "in it")
    full = path / rel
    try:
        escaped = os.path.commonpath([os.path.realpath(full), os.path.realpath(path)]) != os.path.realpath(path)
    except ValueError:
        escaped = True
    if escaped:
        raise DataError(f"{where}: {key} {show(value)} is a link out of {path}; expected a file in it")
    return full


def load_split(path, split):
    """Memory-map one split of a prepared directory as ArrayData."""
    path = Path(path)
    manifest = read_manifest(path)
    if split not in manifest["splits"]:
        raise DataError(f"{path}: no split '{split}'; it has {', '.join(manifest['splits'])}")
    entry = manifest["splits"][split]
    array = _open(path / entry["file"])
    if len(array) != entry["n"] or list(array.shape[1:]) != entry["shape"] or str(array.dtype) != entry["dtype"]:
        raise DataError(f"{path / entry['file']}: {array.shape} {array.dtype} does not match the manifest "
                        f"({entry['n']} x {entry['shape']} {entry['dtype']}); re-run `dsmctl prepare`")
    labels = _open(path / entry["labels"]) if entry.get("labels") else None
    if labels is not None and labels.shape != (entry["n"],):
        raise DataError(f"{path / entry['labels']}: {labels.shape} labels; expected {entry['n']} (one per example); "
                        f"re-run `dsmctl prepare`")
    return ArrayData(array, name=f"{path.name}:{split}", fingerprint=f"{entry['sha256'][:16]}", labels=labels)


def _open(file):
    try:
        return np.load(file, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{file}: unreadable ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                        f"re-run `dsmctl prepare`") from None


def npy_data_offset(file):
    """Where the array data starts in an .npy file (after its header)."""
    with open(file, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            np.lib.format.read_array_header_1_0(f)
        else:
            np.lib.format.read_array_header_2_0(f)
        return f.tell()


def sample_sha256(file, size=None):
    """sha256 of the file size and of SAMPLE_BLOCKS blocks spread evenly over the file, first and last included
    (the whole file when it is small): reads at most 4 MiB, catches any change of size and most local edits."""
    size = os.path.getsize(file) if size is None else size
    h = hashlib.sha256(f"{size};".encode())
    with open(file, "rb") as f:
        if size <= SAMPLE_BLOCKS * SAMPLE_BLOCK:
            h.update(f.read())
        else:
            step = (size - SAMPLE_BLOCK) / (SAMPLE_BLOCKS - 1)
            for i in range(SAMPLE_BLOCKS):
                f.seek(round(i * step))
                h.update(f.read(SAMPLE_BLOCK))
    return h.hexdigest()


def _check_file(path, file, n, shape, dtype, want_bytes, want_sample, quick):
    """Raise DataError naming `file` if it is not exactly what `dsmctl prepare` wrote."""
    hint = f"re-run `dsmctl prepare --verify {path}` to see, and prepare it again"
    try:
        size = os.path.getsize(file)
        # exact integers (no int64 product that a huge n or shape would overflow)
        expected = npy_data_offset(file) + int(n) * math.prod(int(v) for v in shape) * np.dtype(dtype).itemsize
    except (OSError, ValueError) as e:
        raise DataError(f"{file}: unreadable since `dsmctl prepare` ({e}); {hint}") from None
    if size != expected:
        raise DataError(f"{file}: changed since `dsmctl prepare`: {size:,} bytes, but the manifest's n {int(n):,} "
                        f"examples of shape {list(shape)} ({dtype}) make {expected:,}; {hint}")
    if want_bytes is not None and size != want_bytes:
        raise DataError(f"{file}: changed since `dsmctl prepare`: {size:,} bytes, but the manifest's `bytes` says "
                        f"{want_bytes:,}; {hint}")
    if quick and want_sample is not None and sample_sha256(file, size) != want_sample:
        raise DataError(f"{file}: changed since `dsmctl prepare` (sampled sha256 differs); {hint}")


def check_prepared(path, mode="quick", progress=None):
    """Re-check a prepared directory before training on it (the manifest's hashes are what a model records).

    quick: every file's size (exact, from its header and the manifest) and a sampled hash (at most 4 MiB read
    per file; a change to one byte between the sampled blocks of a large file can go unseen); full: the size
    and the whole sha256 of every split, as `dsmctl prepare --verify` (reads everything); skip: nothing."""
    if mode not in VERIFY_MODES:
        raise DataError(f"--verify-data {mode!r}: expected one of {', '.join(VERIFY_MODES)}")
    if mode == "skip" or not is_prepared(path):
        return
    path = Path(path)
    manifest = read_manifest(path)
    for name, e in manifest["splits"].items():
        _check_file(path, path / e["file"], e["n"], e["shape"], e["dtype"], e.get("bytes"), e.get("sample_sha256"),
                    mode == "quick")
        if e.get("labels"):
            _check_file(path, path / e["labels"], e["n"], [], "int64", e.get("labels_bytes"),
                        e.get("labels_sample_sha256"), mode == "quick")
    if mode == "full":
        ok, report = verify(path, progress)
        if not ok:
            item = next(k for k, (a, b) in report.items() if a != b)
            split = item.split(".")[0]
            entry = manifest["splits"].get(split)
            file = path / (entry["labels"] if item.endswith(".labels") else entry["file"]) if entry else path / MANIFEST
            raise DataError(f"{file}: changed since `dsmctl prepare` (sha256 differs from the manifest); re-run "
                            f"`dsmctl prepare --verify {path}` to see, and prepare it again")


def verify(path, progress=None):
    """Recompute every split's sha256 (pixels and labels); returns (ok, {item: (expected, actual)}).
    A file whose size is not exactly header + data (bytes appended or cut) reports its size instead."""
    path = Path(path)
    manifest = read_manifest(path)
    report = {}
    for name, entry in manifest["splits"].items():
        x = _open(path / entry["file"])
        cb = progress and (lambda d, t, name=name: progress.advance(f"hash {name}", d, t))
        report[name] = (entry["sha256"], _sized_sha256(path / entry["file"], x, cb))
        if entry.get("labels_sha256"):
            if not entry.get("labels"):
                raise DataError(f"{path / MANIFEST}: splits.{name} has labels_sha256 but no labels file")
            y_file = path / entry["labels"]
            report[f"{name}.labels"] = (entry["labels_sha256"], _sized_sha256(y_file, _open(y_file)))
    ok = all(a == b for a, b in report.values())
    if ok:
        split_hashes = {k: b for k, (a, b) in report.items() if not k.endswith(".labels")}
        label_hashes = {k[:-7]: b for k, (a, b) in report.items() if k.endswith(".labels")}
        actual = combined_fingerprint(split_hashes, label_hashes)
        report["fingerprint"] = (manifest.get("fingerprint"), actual)
        ok = manifest.get("fingerprint") == actual
    return ok, report


def _sized_sha256(file, array, progress=None):
    size, want = os.path.getsize(file), npy_data_offset(file) + array.nbytes
    return array_sha256(array, progress=progress) if size == want else f"size {size} bytes, expected {want}"
