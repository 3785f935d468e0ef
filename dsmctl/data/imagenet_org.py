"""The downsampled ImageNet files from image-net.org (Chrabaszcz, Loshchilov & Hutter 2017, box resize).

This is the ImageNet64 the paper trained on. As unpacked from the official zips:
  train_data_batch_1 .. train_data_batch_10   (pickle; .npz in the npz downloads)
  val_data                                    (pickle; val_data.npz)
each a dict with `data` (N x 3*S*S uint8: the R plane, then G, then B, each S x S row-major), `labels`
(1-based class numbers) and `mean` (not used). Train images are shuffled across the ten files; the
prepared train split is batch 1, then 2, ..., 10, in file order; validation is val_data in order.
Labels are stored 0-based (the file's label minus 1).
npz files are streamed from the zip member without loading it whole; pickles are read with a restricted
unpickler (safe_pickle.py) one file at a time.
"""
import math
import re
import zipfile
from pathlib import Path

import numpy as np

from .cache import DataError
from .readers import ConcatReader, Transform, npz_member
from .safe_pickle import load_dict

FILE_RE = re.compile(r"^(train_data_batch_(\d+)|val_data)(\.npz)?$")
EXPECTED_64 = {"train": 1_281_167, "validation": 50_000}


def find_batches(path):
    """{'train': [files in batch order], 'validation': [file]} under a folder (or for one file); {} if none."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and FILE_RE.match(p.name))
    found = {}
    for f in files:
        m = FILE_RE.match(f.name)
        if not m:
            continue
        key = ("train", int(m.group(2))) if m.group(2) else ("validation", 0)
        # Prefer the .npz when both formats of one batch are present.
        if key not in found or f.suffix == ".npz":
            found[key] = f
    splits = {}
    for (split, num), f in sorted(found.items()):
        splits.setdefault(split, []).append((num, f))
    if "train" in splits and not path.is_file():
        nums = [num for num, _ in splits["train"]]
        if nums != list(range(1, len(nums) + 1)):
            missing = sorted(set(range(1, max(nums) + 1)) - set(nums))
            raise DataError(f"{path}: train_data_batch_{missing[0]} is missing (found batches {nums}); "
                            f"expected train_data_batch_1..10 from both train zips")
    return {k: [f for _, f in v] for k, v in splits.items()}


def looks_like(path):
    path = Path(path)
    if path.is_file():
        return bool(FILE_RE.match(path.name)) or (path.suffix == ".npz" and _npz_keys(path) >= {"data", "labels"})
    return path.is_dir() and any(FILE_RE.match(p.name) for p in path.rglob("*") if p.is_file())


def _npz_keys(path):
    try:
        with zipfile.ZipFile(path) as zf:
            return {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
    except (zipfile.BadZipFile, OSError):
        return set()


class BatchFile:
    """One image-net.org batch file as a reader of N x 3 x S x S uint8 and 0-based labels."""

    _cache = {}  # path -> dict of one unpickled file (at most one held at a time)

    def __init__(self, path, transform):
        self.path, self.transform = Path(path), transform
        self.npz = self.path.suffix == ".npz" or zipfile.is_zipfile(self.path)
        labels, self.row = self._npz_meta() if self.npz else self._pickle_meta()
        side = math.isqrt(self.row // 3)
        if self.row != 3 * side * side:
            raise DataError(f"{self.path}: rows of {self.row} bytes; expected 3*S*S (R, G, B planes of S x S pixels)")
        if len(labels) and labels.min() < 1:
            raise DataError(f"{self.path}: label {labels.min()} found; image-net.org labels are 1-based (1..1000)")
        self.labels = labels - 1
        self.side, self.n = side, len(labels)
        self.src_shape = (3, side, side)
        self.shape, self.dtype, self.has_labels = transform.out_shape(self.src_shape), np.dtype(np.uint8), True
        self._fh, self._pos = None, None

    def _bad(self, what):
        return DataError(f"{self.path}: {what}; expected an image-net.org batch with `data` (N x 3*S*S uint8) and "
                         f"`labels` (N, 1-based)")

    def _npz_meta(self):
        try:
            with np.load(self.path, allow_pickle=False) as z:
                keys = set(z.keys())
                if not {"data", "labels"} <= keys:
                    raise self._bad(f"arrays {sorted(keys)}")
                labels = np.asarray(npz_member(z, "labels", self.path)).astype(np.int64).reshape(-1)
            shape, dtype, self._offset = self._npy_header()
        except DataError:
            raise
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as e:
            raise DataError(f"{self.path}: not a readable .npz (truncated or corrupt? {str(e).splitlines()[0]})") from None
        if dtype != np.uint8 or len(shape) != 2 or shape[0] != len(labels):
            raise self._bad(f"`data` is {dtype} of shape {shape} with {len(labels)} labels")
        return labels, shape[1]

    def _npy_header(self):
        with zipfile.ZipFile(self.path) as zf, zf.open("data.npy") as f:
            version = np.lib.format.read_magic(f)
            read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read is None:
                raise self._bad(f"`data` has .npy format version {version}")
            shape, fortran, dtype = read(f)
            if fortran:
                raise self._bad("`data` is stored in Fortran order")
            return shape, dtype, f.tell()

    def _pickle_meta(self):
        d = self._load_pickle()
        if not {"data", "labels"} <= set(d):
            raise self._bad(f"keys {sorted(d)}")
        data = d["data"]
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or len(data) != len(d["labels"]):
            raise self._bad(f"`data` is {getattr(data, 'dtype', type(data).__name__)} of shape "
                            f"{getattr(data, 'shape', '?')} with {len(d['labels'])} labels")
        return np.asarray(d["labels"], dtype=np.int64).reshape(-1), data.shape[1]

    def _load_pickle(self):
        key = str(self.path)
        if key not in BatchFile._cache:
            BatchFile._cache.clear()  # drop the previous file before loading the next (each ~1.6 GB)
            BatchFile._cache[key] = load_dict(self.path)
        return BatchFile._cache[key]

    def _npz_rows(self, start, stop):
        if self._fh is None or self._pos != start:
            self.close()
            self._zf = zipfile.ZipFile(self.path)
            self._fh = self._zf.open("data.npy")
            self._fh.seek(self._offset + start * self.row)
        want = (stop - start) * self.row
        try:
            buf = self._fh.read(want)
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise DataError(f"{self.path}: read failed at image {start} (truncated or corrupt? {e})") from None
        if len(buf) != want:
            raise DataError(f"{self.path}: truncated: `data` ends before image {stop}")
        self._pos = stop
        if stop == self.n:
            self.close()
        return np.frombuffer(buf, dtype=np.uint8).reshape(stop - start, self.row)

    def read(self, start, stop):
        rows = self._npz_rows(start, stop) if self.npz else self._load_pickle()["data"][start:stop]
        x = rows.reshape(-1, *self.src_shape)  # R plane, G plane, B plane: already C x H x W
        x = self.transform.batch(np.array(x), str(self.path))
        if not self.npz and stop == self.n:
            BatchFile._cache.pop(str(self.path), None)  # read sequentially: this file is done
        return x, self.labels[start:stop].copy()

    def close(self):
        if self._fh is not None:
            self._fh.close()
            self._zf.close()
            self._fh = None


def load(path, transform=Transform()):
    """Readers {split: reader} and info for image-net.org batches under `path`."""
    found = find_batches(path)
    if not found:
        raise DataError(f"{path}: no image-net.org batches (train_data_batch_N[.npz], val_data[.npz]) found")
    splits = {}
    # Open in reverse so that a pickle read for counting is still cached when writing starts.
    for split, files in found.items():
        splits[split] = ConcatReader(list(reversed([BatchFile(f, transform) for f in reversed(files)])))
    sides = {r.readers[0].side for r in splits.values()} | {b.side for r in splits.values() for b in r.readers}
    if len(sides) != 1:
        raise DataError(f"{path}: batches of different image sizes {sorted(sides)}; expected one size")
    side = sides.pop()
    formats = sorted({"npz" if b.npz else "pickle" for r in splits.values() for b in r.readers})
    files = [b.path for r in splits.values() for b in r.readers]
    info = {"source": str(Path(path).resolve()), "kind": "image-net.org",
            "variant": f"imagenet{side}-image-net.org (Chrabaszcz et al. 2017, box resize)",
            "files": [str(f.relative_to(path)) if Path(path).is_dir() else f.name for f in files],
            "file_format": "+".join(formats),
            "labels": "0-based: image-net.org's 1-based labels minus 1",
            "warnings": []}
    if side == 64:
        for split, n in EXPECTED_64.items():
            if split in splits and splits[split].n != n:
                info["warnings"].append(f"{split} has {splits[split].n:,} images; the full ImageNet64 {split} has {n:,}")
    signature = [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    return splits, info, signature
