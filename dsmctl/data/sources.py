"""Data sources: each turns a source spec into {split: array} plus labels and provenance.

Arrays are N x C x H x W uint8 (8-bit images) or float32 (continuous; N x D vectors allowed).
"""
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .. import densities
from .cache import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
SPLIT_NAMES = ("train", "validation", "val", "test")


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


def synthetic_spec_of(source, spec=None):
    """The density spec of 'synthetic' (with an explicit spec) or 'synthetic:PRESET'."""
    spec = spec or PRESETS.get(source.partition(":")[2] or "gsm1000")
    if spec is None:
        raise DataError(f"{source}: unknown synthetic preset; expected one of {', '.join('synthetic:' + k for k in PRESETS)}")
    return spec


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
    return np.ascontiguousarray(array.transpose(0, 3, 1, 2)) if layout == "nhwc" else array


def check_dtype(array, where):
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        return array.astype(np.float32, copy=False)
    raise DataError(f"{where}: dtype {array.dtype} not supported; expected uint8 (8-bit images) or float (continuous data)")


def arrays(path, layout="auto"):
    """.npy (one array -> split 'train') or .npz (arrays named by split, or a single array)."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            raw = {"train": np.load(path, allow_pickle=False)}
        else:
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.keys())
                named = [k for k in keys if k in SPLIT_NAMES]
                if named:
                    raw = {k: z[k] for k in named}
                elif len(keys) == 1:
                    raw = {"train": z[keys[0]]}
                else:
                    raise DataError(f"{path}: arrays {keys}; expected arrays named train/validation/test, or a single array")
    except DataError:
        raise
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: not a readable {path.suffix} array file ({str(e).splitlines()[0]})") from None
    splits = {k: check_dtype(to_nchw(v, f"{path}[{k}]", layout), f"{path}[{k}]") for k, v in raw.items()}
    return Loaded(splits, info={"source": str(path), "variant": "arrays"})


def image_folder(path, grayscale=False, size=None):
    """PNG/JPEG files under `path` (sorted); sub-folders named train/test/validation become splits."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    subdirs = [d for d in SPLIT_NAMES if (path / d).is_dir()]
    groups = {d: path / d for d in subdirs} if subdirs else {"train": path}
    splits = {}
    for split, folder in groups.items():
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        images = []
        for f in files:
            try:
                with Image.open(f) as im:
                    im = im.convert("L" if grayscale else "RGB")
                    if size is not None and im.size != (size, size):
                        im = resize_center_crop(im, size)
                    images.append(np.asarray(im))
            except (UnidentifiedImageError, OSError):
                raise DataError(f"{f}: not a readable image") from None
            if images[-1].shape != images[0].shape:
                raise DataError(f"{f}: size {images[-1].shape[:2]} differs from {files[0].name}'s "
                                f"{images[0].shape[:2]}; pass --size to resize all images")
        x = np.stack(images)
        splits[split] = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2).copy()
    return Loaded(splits, info={"source": str(path), "variant": "image-folder"})


def resize_center_crop(im, size):
    """Resize the short side to `size` (box filter, like the image-net.org 64x64 set), centre-crop the rest."""
    from PIL import Image

    w, h = im.size
    s = size / min(w, h)
    im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BOX)
    w, h = im.size
    left, top = (w - size) // 2, (h - size) // 2
    return im.crop((left, top, left + size, top + size))


def convert(loaded, grayscale=False, size=None, holdout=0):
    """Apply --grayscale / --size to image arrays and split off the last `holdout` train items as 'test'."""
    for name, x in list(loaded.splits.items()):
        if x.ndim != 4:
            continue
        if grayscale and x.shape[1] == 3:
            if x.dtype != np.uint8:
                raise DataError(f"{loaded.info.get('source')}: --grayscale needs 8-bit images")
            # ITU-R 601-2 luma, as PIL's convert("L").
            g = (x[:, 0] * 299 + x[:, 1] * 587 + x[:, 2] * 114 + 500) // 1000
            loaded.splits[name] = x = g.astype(np.uint8)[:, None]
        if size is not None and x.shape[2:] != (size, size):
            loaded.splits[name] = resize_array(x, size, loaded.info.get("source"))
    if holdout:
        train = loaded.splits["train"]
        n = holdout if holdout >= 1 else math.ceil(holdout * len(train))
        if "test" in loaded.splits or n >= len(train):
            raise DataError(f"{loaded.info.get('source')}: --holdout {holdout} needs a single split with more than {n} items")
        loaded.splits["train"], loaded.splits["test"] = train[:-n], train[-n:]
        lab = loaded.labels.get("train")
        if lab is not None:
            loaded.labels["train"], loaded.labels["test"] = lab[:-n], lab[-n:]
    return loaded


def resize_array(x, size, where):
    from PIL import Image

    if x.dtype != np.uint8:
        raise DataError(f"{where}: --size needs 8-bit images (got {x.dtype})")
    out = np.empty((len(x), x.shape[1], size, size), dtype=np.uint8)
    for i, img in enumerate(x):
        im = Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0))
        r = np.asarray(resize_center_crop(im, size))
        out[i] = r[None] if r.ndim == 2 else r.transpose(2, 0, 1)
    return out


def load(source, synthetic_spec=None, grayscale=False, size=None, holdout=0, layout="auto"):
    """Resolve a source spec: demo | synthetic[:gsm1000] | FILE.npy/.npz | image folder."""
    if source == "demo":
        loaded = demo()
    elif source.startswith("synthetic"):
        loaded = synthetic(synthetic_spec_of(source, synthetic_spec))
    else:
        path = Path(source)
        if not path.exists():
            raise DataError(f"{source}: no such file or folder; expected demo, synthetic:NAME, a .npy/.npz file, "
                            "an image folder, or a directory written by `dsmctl prepare SOURCE --out DIR`")
        if path.is_file() and path.suffix in (".npy", ".npz"):
            loaded = arrays(path, layout)
        elif path.is_dir():
            loaded = image_folder(path, grayscale, size)
        else:
            raise DataError(f"{source}: unsupported file type; expected a .npy/.npz file or an image folder")
    loaded = convert(loaded, grayscale, size, holdout)
    loaded.info["options"] = {"grayscale": grayscale, "size": size, "holdout": holdout, "layout": layout}
    return loaded


PRESETS = {
    "gsm1000": {"kind": "gsm", "d": 1000, "variances": [1.0, 16.0], "n_train": 100_000, "n_test": 10_000, "seed": 0},
    "gaussian64": {"kind": "gaussian", "d": 64, "spectrum": {"scale": 1.0, "exponent": 1.0}, "n_train": 20_000,
                   "n_test": 5_000, "seed": 0},
}
