"""Hugging Face Datasets sources: a Hub id ("owner/name") or a local copy (parquet files, a folder
laid out like the Hub repo, or a `save_to_disk` folder), read split by split in chunks.

Image columns: an `Image` feature (encoded PNG/JPEG bytes, decoded here with PIL, one at a time) or an
array feature (`Array3D` H x W x C, `Array2D`, nested lists) of uint8 pixels.
"""
import io
import os
import re
import sys
import threading
from pathlib import Path

import numpy as np

from .cache import DataError
from .readers import Transform

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
IMAGE_NAMES = ("image", "img", "pixel_values", "pixels")
LABEL_NAMES = ("label", "labels", "fine_label", "class", "target")

# The ImageNet64 variants on the Hub (see docs/data.md for what differs between them).
KNOWN = {
    "benjamin-paine/imagenet-1k-64x64": {
        "variant": "imagenet64-hf-benjamin-paine (ImageNet-1k resized to 64x64; resize method not documented)",
        "splits": {"train": 1_281_167, "validation": 50_000, "test": 100_000}},
    "sradc/imagenet_resized_64x64": {
        "variant": "imagenet64-hf-sradc (TFDS imagenet_resized/64x64 = Chrabaszcz et al. box resize, shuffled)",
        "splits": {"train": 1_281_167, "validation": 50_000}},
}


def size_warnings(name, readers):
    """Warnings for splits whose size differs from the documented size of a known variant."""
    expected = KNOWN.get(name, {}).get("splits", {})
    return [f"{split} has {readers[split].n:,} rows; {name} is documented with {n:,}"
            for split, n in expected.items() if split in readers and readers[split].n != n]


def is_hub_id(spec):
    return bool(HUB_ID.match(spec)) and not Path(spec).exists()


def looks_like_local(path):
    path = Path(path)
    if path.is_file():
        return path.suffix in (".parquet", ".arrow")
    if not path.is_dir():
        return False
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file() or \
        any(p.suffix == ".parquet" for p in path.rglob("*"))


def hub_reachable(timeout=5.0):
    """True if the Hub endpoint answers within `timeout` s (any HTTP status), False otherwise."""
    import urllib.error
    import urllib.request

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    result = {}

    def probe():
        try:
            urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout).close()
            result["ok"] = True
        except urllib.error.HTTPError:
            result["ok"] = True
        except Exception:
            result["ok"] = False

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 1.0)  # DNS lookups ignore the socket timeout; never wait longer than this
    return result.get("ok", False)


def offline():
    env = {k: os.environ.get(k, "").upper() for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    return any(v in ("1", "ON", "YES", "TRUE") for v in env.values())


def go_offline():
    """Set the offline flags, in the environment and in already imported modules."""
    os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].constants.HF_HUB_OFFLINE = True
    if "datasets" in sys.modules:
        sys.modules["datasets"].config.HF_HUB_OFFLINE = True


def how_to_go_local(spec):
    return (f"on a machine with internet run `hf download {spec} --repo-type dataset --local-dir DIR`, copy DIR "
            f"here and run `dsmctl prepare hf:DIR --out OUT` (or put the dataset in HF_HOME's cache)")


def _load_hub(spec, splits, config, revision):
    if not offline() and not hub_reachable():
        go_offline()  # unreachable: use the local HF cache if it has the dataset, else fail at once
    import datasets

    try:
        if splits:
            return {s: datasets.load_dataset(spec, config, split=s, revision=revision) for s in splits}
        return dict(datasets.load_dataset(spec, config, revision=revision))
    except Exception as e:  # datasets raises many types (ConnectionError, FileNotFoundError, HfHubHTTPError...)
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        if offline():
            raise DataError(f"{spec}: the Hugging Face Hub is unreachable (offline mode) and the dataset is not in "
                            f"the local cache; {how_to_go_local(spec)}") from None
        raise DataError(f"{spec}: could not load from the Hugging Face Hub ({type(e).__name__}: {text}); "
                        f"{how_to_go_local(spec)}") from None


def _load_local(path, splits):
    import datasets

    path = Path(path)
    try:
        if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
            loaded = datasets.load_from_disk(str(path))
            loaded = {"train": loaded} if isinstance(loaded, datasets.Dataset) else dict(loaded)
        elif path.is_file():
            kind = "parquet" if path.suffix == ".parquet" else "arrow"
            loaded = {"train": datasets.load_dataset(kind, data_files={"train": str(path)}, split="train")}
        else:
            loaded = dict(datasets.load_dataset(str(path)))
    except Exception as e:
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{path}: not loadable as a Hugging Face dataset ({type(e).__name__}: {text[:200]}); "
                        f"expected parquet files, a Hub-style folder or a save_to_disk folder") from None
    if splits:
        missing = [s for s in splits if s not in loaded]
        if missing:
            raise DataError(f"{path}: no split {missing[0]!r}; it has {', '.join(loaded)}")
        loaded = {s: loaded[s] for s in splits}
    return loaded


def _pick_columns(ds, where, image_column, label_column):
    from datasets import Array2D, Array3D, ClassLabel, Image, Value

    feats = ds.features
    if image_column is None:
        typed = [k for k, f in feats.items() if isinstance(f, (Image, Array3D, Array2D))]
        named = [k for k in IMAGE_NAMES if k in feats]
        image_column = (typed or named or [None])[0]
    if image_column not in feats:
        raise DataError(f"{where}: no image column (columns {list(feats)}); expected an Image or Array3D feature "
                        f"or a column named {'/'.join(IMAGE_NAMES)} (or pass --image-column)")
    if label_column is None:
        label_column = next((k for k in LABEL_NAMES if k in feats), None)
    if label_column is not None:
        f = feats.get(label_column)
        if f is None or not (isinstance(f, ClassLabel) or (isinstance(f, Value) and "int" in f.dtype)):
            raise DataError(f"{where}: label column {label_column!r} is {f!r}; expected integer labels")
    return image_column, label_column


class HFReader:
    """One split of a datasets.Dataset: decoded/array pixels -> N x C x H x W uint8, int64 labels."""

    def __init__(self, ds, where, transform=Transform(), image_column=None, label_column=None):
        from datasets import Image

        self.where, self.transform = where, transform
        self.image_column, self.label_column = _pick_columns(ds, where, image_column, label_column)
        self.encoded = isinstance(ds.features[self.image_column], Image)
        if self.encoded:
            ds = ds.cast_column(self.image_column, Image(decode=False))
        self.ds = ds.with_format("arrow")
        self.n = len(ds)
        self.has_labels, self.dtype = self.label_column is not None, np.dtype(np.uint8)
        self._row, self._first = None, None  # raw row shape (arrays); shape of row 0 after transforms
        self.shape = self._pixels(0, 1).shape[1:] if self.n else (0,)

    def _pixels(self, start, stop):
        col = self.ds[start:stop].column(self.image_column)
        return self._decode(col, start) if self.encoded else self._arrays(col, start, stop)

    def _decode(self, col, start):
        from PIL import Image, UnidentifiedImageError

        out = []
        for i, item in enumerate(col.to_pylist()):
            where = f"{self.where} row {start + i}"
            try:
                src = io.BytesIO(item["bytes"]) if item.get("bytes") is not None else item["path"]
                with Image.open(src) as im:
                    x = self.transform.pil(im, where)
            except UnidentifiedImageError:
                raise DataError(f"{where}: not a decodable image (unknown image format)") from None
            except (OSError, TypeError, ValueError) as e:
                raise DataError(f"{where}: not a decodable image ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
            if self._first is None:
                self._first = x.shape
            elif x.shape != self._first:
                raise DataError(f"{where}: image is {x.shape[2]}x{x.shape[1]} with {x.shape[0]} channel(s), row 0 is "
                                f"{self._first[2]}x{self._first[1]}; pass --size to make all images one size")
            out.append(x)
        return np.stack(out)

    def _arrays(self, col, start, stop):
        import pyarrow as pa

        values = col.combine_chunks()
        if isinstance(values, pa.ExtensionArray):
            values = values.storage
        k = stop - start
        while pa.types.is_list(values.type) or pa.types.is_large_list(values.type) or pa.types.is_fixed_size_list(values.type):
            values = values.flatten()
        flat = values.to_numpy(zero_copy_only=False)
        shape = self._row or self._row_shape()
        if flat.size != k * int(np.prod(shape)):
            raise DataError(f"{self.where} rows {start}..{stop}: {flat.size} pixel values, expected {k} x {shape}")
        if flat.dtype != np.uint8:
            if not np.issubdtype(flat.dtype, np.integer) or flat.size and (flat.min() < 0 or flat.max() > 255):
                raise DataError(f"{self.where} rows {start}..{stop}: pixels of type {flat.dtype}; expected uint8 (0..255)")
            flat = flat.astype(np.uint8)
        x = flat.reshape(k, *shape)
        self._row = shape
        if x.ndim == 3:
            x = x[:, None]
        elif x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
            x = x.transpose(0, 3, 1, 2)  # H x W x C (Array3D as written by most converters) -> C x H x W
        return self.transform.batch(np.ascontiguousarray(x), self.where)

    def _row_shape(self):
        from datasets import Array2D, Array3D

        feat = self.ds.features[self.image_column]
        if isinstance(feat, (Array2D, Array3D)):
            return tuple(feat.shape)
        row = np.asarray(self.ds.with_format("numpy")[0][self.image_column])  # nested lists: shape of row 0
        return row.shape

    def read(self, start, stop):
        x = self._pixels(start, stop)
        y = None
        if self.has_labels:
            y = self.ds[start:stop].column(self.label_column).to_numpy(zero_copy_only=False).astype(np.int64)
        return x, y


def load(spec, transform=Transform(), splits=None, config=None, revision=None, image_column=None, label_column=None):
    """Readers {split: HFReader}, info and a source signature for a Hub id or a local HF dataset."""
    import datasets

    local = not is_hub_id(spec)
    if not sys.stderr.isatty():
        datasets.disable_progress_bars()  # tqdm's carriage returns would flood a log; we print our own lines
    loaded = _load_local(spec, splits) if local else _load_hub(spec, splits, config, revision)
    readers = {name: HFReader(ds, f"{spec}[{name}]", transform, image_column, label_column)
               for name, ds in loaded.items()}
    first = next(iter(readers.values()))
    known = KNOWN.get(spec, {})
    info = {"source": str(Path(spec).resolve()) if local else spec, "kind": "hf-local" if local else "hf-hub",
            "variant": known.get("variant", f"hf:{Path(spec).name if local else spec}"),
            "hf": {"config": config, "revision": revision, "datasets_version": datasets.__version__,
                   "image_column": first.image_column, "label_column": first.label_column,
                   "image_feature": repr(next(iter(loaded.values())).features[first.image_column])},
            "labels": f"as stored in column {first.label_column!r}" if first.label_column else "none",
            "warnings": []}
    info["warnings"] += size_warnings(spec, readers)
    if local:
        root = Path(spec)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        signature = [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    else:
        signature = [spec, config, revision, {k: getattr(ds, "_fingerprint", None) for k, ds in loaded.items()}]
    return readers, info, signature
