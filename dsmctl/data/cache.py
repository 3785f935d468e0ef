"""The prepared cache: one contiguous array per split (memory-mapped when read) plus manifest.json.

Layout of a prepared directory:
  manifest.json        format, source, variant, options, splits {name: {file, n, shape, dtype, sha256}},
                       fingerprint (sha256 over all splits), and for synthetic data the density spec
  <split>.npy          N x C x H x W uint8 (8-bit images) or float32 (continuous data; N x D vectors too)
  <split>_labels.npy   optional int64 labels
A directory is complete only once manifest.json exists: it is written last, and the whole directory is
built under a temporary name and renamed into place.
"""
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .arrays import ArrayData

FORMAT = "dsmctl-prepared/1"
MANIFEST = "manifest.json"


class DataError(ValueError):
    """Bad or missing data; the message is one line naming the file and what was expected."""


def array_sha256(array, chunk_rows=None):
    """sha256 over dtype, shape and bytes, streamed so memory-mapped arrays are never loaded whole."""
    h = hashlib.sha256(f"{array.dtype.str}{tuple(array.shape)}".encode())
    rows = chunk_rows or max(1, (64 << 20) // max(1, array[0].nbytes if len(array) else 1))
    for start in range(0, len(array), rows):
        h.update(np.ascontiguousarray(array[start:start + rows]).tobytes())
    return h.hexdigest()


def combined_fingerprint(split_hashes):
    h = hashlib.sha256()
    for name in sorted(split_hashes):
        h.update(f"{name}:{split_hashes[name]};".encode())
    return h.hexdigest()


def is_prepared(path):
    return (Path(path) / MANIFEST).is_file()


def read_manifest(path):
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: not a prepared dataset (no {MANIFEST}); run `dsmctl prepare SOURCE --out {path}`") from None
    except json.JSONDecodeError:
        raise DataError(f"{path / MANIFEST}: not valid JSON; re-run `dsmctl prepare`") from None
    if manifest.get("format") != FORMAT:
        raise DataError(f"{path / MANIFEST}: unknown format {manifest.get('format')!r}; expected {FORMAT}")
    return manifest


def write_prepared(out, splits, labels=None, info=None):
    """Write arrays {split: array} atomically to directory `out`; returns the manifest."""
    out = Path(out)
    if out.exists() and not is_prepared(out) and any(out.iterdir()):
        raise DataError(f"{out}: exists, is not empty and is not a prepared dataset; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        manifest = {"format": FORMAT, **(info or {}), "splits": {}}
        for name, array in splits.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(array))
            entry = {"file": f"{name}.npy", "n": int(len(array)), "shape": list(array.shape[1:]),
                     "dtype": str(array.dtype), "sha256": array_sha256(array)}
            if labels and labels.get(name) is not None:
                np.save(tmp / f"{name}_labels.npy", np.asarray(labels[name], dtype=np.int64))
                entry["labels"] = f"{name}_labels.npy"
            manifest["splits"][name] = entry
        manifest["fingerprint"] = combined_fingerprint({k: v["sha256"] for k, v in manifest["splits"].items()})
        _write_json(tmp / MANIFEST, manifest)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())


def load_split(path, split):
    """Memory-map one split of a prepared directory as ArrayData."""
    path = Path(path)
    manifest = read_manifest(path)
    if split not in manifest["splits"]:
        raise DataError(f"{path}: no split '{split}'; it has {', '.join(manifest['splits'])}")
    entry = manifest["splits"][split]
    try:
        array = np.load(path / entry["file"], mmap_mode="r")
    except (OSError, ValueError) as e:
        raise DataError(f"{path / entry['file']}: unreadable ({e}); re-run `dsmctl prepare`") from None
    if len(array) != entry["n"] or list(array.shape[1:]) != entry["shape"]:
        raise DataError(f"{path / entry['file']}: shape {array.shape} does not match the manifest "
                        f"({entry['n']} x {entry['shape']}); re-run `dsmctl prepare`")
    labels = np.load(path / entry["labels"], mmap_mode="r") if entry.get("labels") else None
    return ArrayData(array, name=f"{path.name}:{split}", fingerprint=f"{entry['sha256'][:16]}", labels=labels)


def verify(path):
    """Recompute every split's sha256; returns (ok, {split: (expected, actual)})."""
    path = Path(path)
    manifest = read_manifest(path)
    report = {}
    for name, entry in manifest["splits"].items():
        actual = array_sha256(np.load(path / entry["file"], mmap_mode="r"))
        report[name] = (entry["sha256"], actual)
    return all(a == b for a, b in report.values()), report
