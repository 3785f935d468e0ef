"""Data sources: a source spec -> {split: reader} (readers.py), provenance info and a request record.

Source specs (`dsmctl prepare SOURCE`; a prefix forces the kind, otherwise it is detected):
  demo | synthetic[:PRESET]                  embedded patches; samples of a closed-form density
  hf:ID_OR_PATH | owner/name                 Hugging Face Hub id, or local parquet / Hub-style / save_to_disk folder
  imagenet-org:PATH                          image-net.org train_data_batch_N / val_data (npz or pickle)
  mnist:ROOT | fashion-mnist:ROOT | cifar10:ROOT   torchvision's raw files under ROOT (no download)
  arrays:FILE | FILE.npy | FILE.npz          arrays (N x C x H x W, N x H x W x C, N x H x W, N x D)
  images:DIR | DIR                           PNG/JPEG files (sub-folders train/validation/val/test = splits)
Arrays are N x C x H x W uint8 (8-bit images) or float32 (continuous; N x D vectors allowed).
"""
import math
import zipfile
import zlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from ..nn import densities
from . import hf, imagenet_org, torchvision_raw
from .cache import DataError
from .synthetic_spec import check_spec
from .readers import ArrayReader, RangeReader, Transform, check_reader, npz_member, read_all

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
IGNORED_SUFFIXES = {".txt", ".md", ".json", ".csv", ".yaml", ".yml", ".xml", ".html"}
SPLIT_NAMES = ("train", "validation", "val", "test")
PREFIXES = ("hf", "imagenet-org", "mnist", "fashion-mnist", "cifar10", "arrays", "images")


@dataclass
class Loaded:
    splits: dict
    labels: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


def demo():
    """The embedded demo set: 16x16 grey patches of CC0/public-domain photographs (see demo/PROVENANCE.md)."""
    with resources.files("dsmctl.data").joinpath("demo/patches.npz").open("rb") as f:
        z = np.load(f)
        splits = {k: np.ascontiguousarray(z[k]) for k in ("train", "test")}
    return Loaded(splits, info={"source": "demo", "variant": "skimage-cc0-patches-16x16-gray"})


def synthetic(spec):
    """Samples of a closed-form density, e.g. {kind: gsm, d: 1000, n_train: 100000, n_test: 10000, seed: 0}."""
    check_spec(spec)
    spec = dict(spec)
    n_train, n_test, seed = int(spec.pop("n_train", 10_000)), int(spec.pop("n_test", 2_000)), int(spec.pop("seed", 0))
    try:
        density = densities.from_spec(spec)
    except (KeyError, ValueError, TypeError) as e:
        raise DataError(f"synthetic data {spec}: {e}") from None
    g = torch.Generator().manual_seed(seed)
    splits = {"train": density.sample(n_train, g, torch.float32).numpy(),
              "test": density.sample(n_test, g, torch.float32).numpy()}
    return Loaded(splits, info={"source": "synthetic", "variant": spec["kind"],
                                "density": {**spec, "n_train": n_train, "n_test": n_test, "seed": seed}})


def to_nchw(array, where, layout="auto"):
    """Put an image array in N x C x H x W; N x H x W gets one channel; N x D vectors pass through."""
    if array.ndim == 2:
        return array
    if array.ndim == 3:
        return array[:, None]
    if array.ndim != 4:
        raise DataError(f"{where}: expected N x C x H x W, N x H x W x C, N x H x W or N x D, got shape {array.shape}")
    if layout == "auto":
        channels_last = array.shape[-1] in (1, 3, 4) and array.shape[1] not in (1, 3, 4)
        layout = "nhwc" if channels_last else "nchw"
    return array.transpose(0, 3, 1, 2) if layout == "nhwc" else array


def check_dtype(array, where):
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        return array.astype(np.float32, copy=False)
    raise DataError(f"{where}: dtype {array.dtype} not supported; expected uint8 (8-bit images) or float (continuous data)")


def arrays(path, layout="auto", transform=Transform()):
    """.npy (one array -> split 'train', memory-mapped) or .npz (arrays named by split, or a single array;
    optional `<split>_labels` arrays)."""
    path = Path(path)
    labels = {}
    try:
        if path.suffix == ".npy":
            raw = {"train": np.load(path, mmap_mode="r", allow_pickle=False)}
        else:
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.keys())
                named = [k for k in keys if k in SPLIT_NAMES]
                if named:
                    raw = {k: npz_member(z, k, path) for k in named}
                    labels = {k: npz_member(z, f"{k}_labels", path) for k in named if f"{k}_labels" in keys}
                elif len(keys) == 1:
                    raw = {"train": npz_member(z, keys[0], path)}
                else:
                    raise DataError(f"{path}: arrays {keys}; expected arrays named train/validation/test, or a single array")
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        damaged = " (damaged or truncated)" if isinstance(e, (zipfile.BadZipFile, zlib.error, EOFError)) else ""
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{path}: not a readable {path.suffix} array file{damaged} ({why})") from None
    readers = {}
    for k, v in raw.items():
        where = f"{path}[{k}]"
        x = check_dtype(to_nchw(v, where, layout), where)
        y = labels.get(k)
        if y is not None and (y.ndim != 1 or y.dtype.kind not in "iu"):
            raise DataError(f"{path}[{k}_labels]: {y.dtype} of shape {y.shape}; expected one integer label per item")
        if y is not None and len(y) != len(x):
            raise DataError(f"{path}[{k}_labels]: {len(y)} labels for {len(x)} items")
        readers[k] = ArrayReader(x, y, transform, where)
    return readers, {"source": str(path.resolve()), "kind": "arrays", "variant": "arrays"}, _signature([path])


class ImageFiles:
    """Image files decoded one by one with PIL (RGB, or grey with --grayscale), all of one size."""

    def __init__(self, files, labels, transform, where):
        self.files, self.labels, self.transform, self.where = files, labels, transform, where
        self.n, self.dtype, self.has_labels = len(files), np.dtype(np.uint8), labels is not None
        self.shape = self._decode(files[0]).shape

    def _decode(self, f):
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(f) as im:
                return self.transform.pil(im, str(f))
        except UnidentifiedImageError:
            raise DataError(f"{f}: not a readable image (unknown image format)") from None
        except Image.DecompressionBombError as e:
            raise DataError(f"{f}: refused, too many pixels for an image ({str(e).split(', could')[0]}; "
                            f"a decompression bomb?)") from None
        except (OSError, ValueError) as e:
            raise DataError(f"{f}: not a readable image ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None

    def read(self, start, stop):
        out = np.empty((stop - start, *self.shape), dtype=np.uint8)
        for i, f in enumerate(self.files[start:stop]):
            x = self._decode(f)
            if x.shape != self.shape:
                raise DataError(f"{f}: size {x.shape[2]}x{x.shape[1]} differs from {self.files[0].name}'s "
                                f"{self.shape[2]}x{self.shape[1]}; pass --size to make all images one size")
            out[i] = x
        y = None if self.labels is None else self.labels[start:stop]
        return out, y


def image_folder(path, transform=Transform()):
    """PNG/JPEG files under `path` (sorted); sub-folders train/validation/val/test become splits; when all
    files of a split sit in class sub-folders, the sorted sub-folder names give 0-based labels."""
    path = Path(path)
    subdirs = [d for d in SPLIT_NAMES if (path / d).is_dir()]
    groups = {d: path / d for d in subdirs} if subdirs else {"train": path}
    readers, classes, all_files = {}, None, []
    for split, folder in groups.items():
        files = []
        for p in sorted(folder.rglob("*")):
            if not p.is_file() or any(part.startswith(".") for part in p.relative_to(folder).parts):
                continue
            if p.suffix.lower() in IMAGE_SUFFIXES:
                files.append(p)
            elif p.suffix.lower() not in IGNORED_SUFFIXES:
                raise DataError(f"{p}: not an image file (suffix {p.suffix or 'none'}); expected "
                                f"{', '.join(sorted(IMAGE_SUFFIXES))} in an image folder")
        if not files:
            raise DataError(f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        labels = None
        if all(len(f.relative_to(folder).parts) == 2 for f in files):
            names = sorted({f.relative_to(folder).parts[0] for f in files})
            classes = classes or names
            index = {c: i for i, c in enumerate(classes)}
            if set(names) <= set(index):
                labels = np.array([index[f.relative_to(folder).parts[0]] for f in files], dtype=np.int64)
        readers[split] = ImageFiles(files, labels, transform, str(folder))
        all_files += files
    info = {"source": str(path.resolve()), "kind": "image-folder", "variant": "image-folder"}
    if classes and all(r.has_labels for r in readers.values()):
        info["classes"] = classes
        info["labels"] = "0-based index of the class sub-folder in sorted order"
    return readers, info, _signature(all_files)


def _signature(files):
    return [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def _kind(source):
    """Split an explicit 'kind:' prefix off, or detect the kind of source."""
    head, sep, rest = source.partition(":")
    if sep and head in PREFIXES:
        return head, rest
    if source == "demo" or source.startswith("synthetic"):
        return source.partition(":")[0], source.partition(":")[2]
    path = Path(source)
    if not path.exists():
        if hf.is_hub_id(source):
            return "hf", source
        raise DataError(f"{source}: no such file or folder; expected demo, synthetic:NAME, a Hugging Face id "
                        f"owner/name, a .npy/.npz file, an image folder, or KIND:PATH with KIND one of {', '.join(PREFIXES)}")
    if imagenet_org.looks_like(path):
        return "imagenet-org", source
    if path.is_file() and path.suffix in (".npy", ".npz"):
        return "arrays", source
    if hf.looks_like_local(path):
        return "hf", source
    if path.is_dir():
        for kind in ("mnist", "fashion-mnist"):
            if (path / torchvision_raw.KINDS[kind] / "raw").is_dir():
                return kind, source
        if (path / "cifar-10-batches-py").is_dir():
            return "cifar10", source
        if any((path / f"{name}{gz}").is_file() for name in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte")
               for gz in ("", ".gz")):
            raise DataError(f"{source}: holds MNIST-format IDX files; say which data set they are: "
                            f"mnist:{source} or fashion-mnist:{source}")
        return "images", source
    raise DataError(f"{source}: unsupported file type; expected a .npy/.npz/.parquet file or a folder")


def synthetic_spec_of(source, spec=None):
    """The density spec of 'synthetic' (with an explicit spec) or 'synthetic:PRESET'."""
    spec = spec or PRESETS.get(source.partition(":")[2] or "gsm1000")
    if spec is None:
        raise DataError(f"{source}: unknown synthetic preset; expected one of {', '.join('synthetic:' + k for k in PRESETS)}")
    return spec


def open_source(source, synthetic_spec=None, grayscale=False, size=None, fit="resize", holdout=0, layout="auto",
                splits=None, limit=None, config=None, revision=None, image_column=None, label_column=None,
                variant=None):
    """(readers {split: reader}, info, request) for a source spec; nothing large is read yet.

    variant: name the data set in the manifest; a known Hub id (hf.KNOWN) also brings its documented
    description and split sizes, e.g. for a local copy of sradc/imagenet_resized_64x64.
    """
    if fit not in ("resize", "crop", "pad"):
        raise DataError(f"--fit {fit!r}: expected resize, crop or pad")
    if size is not None and size <= 0:
        raise DataError(f"--size {size}: expected a positive number of pixels")
    transform = Transform(grayscale, size, fit)
    kind, spec = _kind(str(source))
    signature = None
    if kind in ("demo", "synthetic"):
        if kind == "demo":
            loaded = demo()
        else:
            loaded = synthetic(synthetic_spec_of(str(source), synthetic_spec))
        readers = {k: ArrayReader(v, loaded.labels.get(k), transform, f"{source}:{k}") for k, v in loaded.splits.items()}
        info, signature = loaded.info, loaded.info.get("density")
    elif kind == "hf":
        readers, info, signature = hf.load(spec, transform, splits, config, revision, image_column, label_column)
    elif kind == "imagenet-org":
        readers, info, signature = imagenet_org.load(spec, transform)
    elif kind in ("mnist", "fashion-mnist"):
        readers, info, signature = torchvision_raw.load_idx(spec, kind, transform)
    elif kind == "cifar10":
        readers, info, signature = torchvision_raw.load_cifar10(spec, transform)
    elif kind == "arrays":
        readers, info, signature = arrays(spec, layout, transform)
    else:
        readers, info, signature = image_folder(spec, transform)
    if splits:
        missing = [s for s in splits if s not in readers]
        if missing:
            raise DataError(f"{source}: no split {missing[0]!r}; it has {', '.join(readers)}")
        readers = {s: readers[s] for s in splits}
    if variant:
        info = {**info, "variant": hf.KNOWN.get(variant, {}).get("variant", variant),
                "warnings": info.get("warnings", []) + hf.size_warnings(variant, readers)}
    readers = _holdout_and_limit(readers, holdout, limit, source)
    for name, reader in readers.items():
        check_reader(reader, getattr(reader, "where", f"{source}:{name}"))
    check_same_shape(readers, source)
    options = {"grayscale": grayscale, "size": size, "fit": fit if size else None, "holdout": holdout,
               "layout": layout, "splits": list(splits) if splits else None, "limit": limit, "config": config,
               "revision": revision, "image_column": image_column, "label_column": label_column,
               "variant": variant}
    info = {**info, "options": options, "transform": transform.describe()}
    request = {"source": info.get("source"), "kind": kind, "options": options, "signature": signature}
    return readers, info, request


def check_same_shape(readers, source):
    """Refuse splits whose examples differ in shape (a model trains on one split and is evaluated on another)."""
    shapes = {name: tuple(r.shape) for name, r in readers.items()}
    if len(set(shapes.values())) > 1:
        (a, sa), (b, sb) = next(iter(shapes.items())), next((k, v) for k, v in shapes.items()
                                                              if v != next(iter(shapes.values())))
        raise DataError(f"{source}: split {a!r} has examples of shape {sa}, split {b!r} {sb}; expected every split "
                        f"of one shape (use --size / --grayscale to make them so, or --split to take some)")


def _holdout_and_limit(readers, holdout, limit, source):
    if holdout:
        train = readers.get("train")
        n = holdout if holdout >= 1 else math.ceil(holdout * (train.n if train else 0))
        if train is None or "test" in readers or n >= train.n:
            raise DataError(f"{source}: --holdout {holdout} needs a single split 'train' with more than {n} items")
        readers = {**readers, "train": RangeReader(train, 0, train.n - n), "test": RangeReader(train, train.n - n, train.n)}
    if limit is not None:
        if limit <= 0:
            raise DataError(f"--limit {limit}: expected a positive number of items")
        readers = {k: RangeReader(r, 0, min(limit, r.n)) for k, r in readers.items()}
    return readers


def load(source, synthetic_spec=None, grayscale=False, size=None, holdout=0, layout="auto", fit="resize", **options):
    """A whole source in memory (small sources used directly as data.source, without `dsmctl prepare`)."""
    readers, info, _ = open_source(source, synthetic_spec, grayscale, size, fit, holdout, layout, **options)
    loaded = Loaded({}, {}, info)
    for name, reader in readers.items():
        loaded.splits[name], labels = read_all(reader, where=str(source))
        if labels is not None:
            loaded.labels[name] = labels
    return loaded


PRESETS = {
    "gsm1000": {"kind": "gsm", "d": 1000, "variances": [1.0, 16.0], "n_train": 100_000, "n_test": 10_000, "seed": 0},
    "gaussian64": {"kind": "gaussian", "d": 64, "spectrum": {"scale": 1.0, "exponent": 1.0}, "n_train": 20_000,
                   "n_test": 5_000, "seed": 0},
    # image-like GSM at 16x16 (docs/validation.md, "Synthetic image-like testbed: gsm16")
    "gsm16": {"kind": "gsm-image", "size": 16, "channels": 1, "spectrum_exponent": 2.0, "f0": 0.0078125,
              "pixel_std": 0.22, "variances": [0.25, 1.75], "weights": [0.5, 0.5], "mean": 0.5,
              "n_train": 50_000, "n_test": 2_000, "seed": 0},
}
