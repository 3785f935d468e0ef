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
"""
import hashlib
import json
from pathlib import Path

import numpy as np

from .arrays import ArrayData

FORMAT = "dsmctl-prepared/1"
MANIFEST = "manifest.json"


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


def verify(path, progress=None):
    """Recompute every split's sha256 (pixels and labels); returns (ok, {item: (expected, actual)})."""
    path = Path(path)
    manifest = read_manifest(path)
    report = {}
    for name, entry in manifest["splits"].items():
        try:
            x = np.load(path / entry["file"], mmap_mode="r")
        except (OSError, ValueError) as e:
            raise DataError(f"{path / entry['file']}: unreadable ({str(e).splitlines()[0]})") from None
        cb = progress and (lambda d, t, name=name: progress.advance(f"hash {name}", d, t))
        report[name] = (entry["sha256"], array_sha256(x, progress=cb))
        if entry.get("labels_sha256"):
            report[f"{name}.labels"] = (entry["labels_sha256"], array_sha256(np.load(path / entry["labels"], mmap_mode="r")))
    ok = all(a == b for a, b in report.values())
    if ok:
        split_hashes = {k: b for k, (a, b) in report.items() if not k.endswith(".labels")}
        label_hashes = {k[:-7]: b for k, (a, b) in report.items() if k.endswith(".labels")}
        actual = combined_fingerprint(split_hashes, label_hashes)
        report["fingerprint"] = (manifest.get("fingerprint"), actual)
        ok = manifest.get("fingerprint") == actual
    return ok, report
