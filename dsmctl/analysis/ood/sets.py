"""Reference and outlier image sets for OOD scoring: data splits, classes of a labelled split, and built-in shifts.

Built-in shifts of the reference images x (8-bit, kept 8-bit):
  inverted     255 - x                      upside-down  x flipped top-bottom
  noise        uniform random pixels        constant     one uniform random grey level per image
  patches      the embedded demo patches (16x16 grey photographs), resized to the model's shape
  digits[:FILE] the 8x8 UCI digits (scikit-learn's copy; FILE: its digits.csv.gz), resized to the model's shape
Any other name is a data source (`dsmctl prepare` accepts it, or a prepared directory), SRC or SRC:SPLIT (default
split: test); class:K takes the reference split's images with label K (leave-one-class-out).
Random shifts are keyed by the seed, so a set is the same on every run. A built-in set is a new array: its
per-image `index` is the position k (for the shifts of the reference: the shift of the k-th reference image).
"""
import gzip
from pathlib import Path

import numpy as np
import torch

from ...data.arrays import ArrayData

SHIFTS = ("inverted", "upside-down", "noise", "constant", "patches", "digits")


def resize_to(images, shape):
    """uint8 (N, C0, H0, W0) -> uint8 (N, C, H, W): bilinear (antialiased when shrinking), grey repeated to C."""
    c, h, w = shape
    x = torch.from_numpy(np.asarray(images, dtype=np.float32))
    if x.shape[1] not in (1, c):
        x = x.mean(1, keepdim=True)
    x = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False,
                                        antialias=h < x.shape[2] or w < x.shape[3])
    if x.shape[1] != c:
        x = x.expand(-1, c, -1, -1)
    return x.round().clamp(0, 255).to(torch.uint8).numpy()


def _rows(data, n):
    data = ArrayData.wrap(data)
    pos = np.arange(min(n, len(data)))
    return np.ascontiguousarray(data.array[data.index(pos)])


def digits(file=None):
    """The 1,797 UCI 8x8 digits (values 0..16) as uint8 (N, 1, 8, 8) scaled to 0..255."""
    if file is None:
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise ValueError("outlier set 'digits': scikit-learn is not installed; install it, or give "
                             "digits:FILE with FILE its sklearn/datasets/data/digits.csv.gz") from None
        pix = load_digits().images
    else:
        path = Path(file)
        if not path.is_file():
            raise ValueError(f"outlier set digits:{file}: no such file; expected scikit-learn's digits.csv.gz")
        opener = gzip.open if path.suffix == ".gz" else open
        try:
            with opener(path, "rt") as f:
                table = np.loadtxt(f, delimiter=",")
        except (OSError, ValueError, EOFError) as e:
            raise ValueError(f"outlier set digits:{file}: unreadable ({str(e)[:80]}); expected scikit-learn's "
                             "digits.csv.gz (65 numbers a row)") from None
        if table.ndim != 2 or table.shape[1] != 65:
            raise ValueError(f"outlier set digits:{file}: rows of {table.shape[-1]} numbers; expected 65 (64 pixels "
                             "and the label)")
        pix = table[:, :64].reshape(-1, 8, 8)
    return np.round(np.asarray(pix) * 255 / 16).clip(0, 255).astype(np.uint8)[:, None]


def shifted(name, ref, shape, n, seed=0):
    """A built-in shift (SHIFTS) of the reference ArrayData `ref`, at most n images, as ArrayData."""
    kind, _, arg = name.partition(":")
    rng = np.random.default_rng([seed, SHIFTS.index(kind)])
    x = _rows(ref, n) if kind in ("inverted", "upside-down", "noise", "constant") else None
    if x is not None and x.dtype != np.uint8:
        raise ValueError(f"outlier set {name}: the reference {ref.name} is not 8-bit images; built-in shifts need "
                         "uint8 images")
    if kind == "inverted":
        out = 255 - x
    elif kind == "upside-down":
        out = x[..., ::-1, :]
    elif kind == "noise":
        out = rng.integers(0, 256, size=x.shape, dtype=np.uint8)
    elif kind == "constant":
        out = np.broadcast_to(rng.integers(0, 256, size=(len(x), 1, 1, 1), dtype=np.uint8), x.shape)
    elif kind == "patches":
        from ...data import sources

        out = resize_to(sources.demo().splits["test"][:n], shape)
    else:
        out = resize_to(digits(arg or None)[:n], shape)
    out = np.ascontiguousarray(out)
    return ArrayData(out, name=kind + (f"({ref.name})" if kind in SHIFTS[:4] else ""))


def with_label(data, label, n):
    """The first n images of `data` whose label is `label` (the held-out class of leave-one-class-out)."""
    if data.labels is None:
        raise ValueError(f"outlier set class:{label}: {data.name} has no labels; expected a labelled split")
    own = np.asarray(data.labels)[data.index(np.arange(len(data)))]
    pos = np.flatnonzero(own == label)[:n]
    return data.subset(pos, name=f"{data.name}[class {label}]")


def check_set(data, shape, what):
    """Refuse a set the model cannot score: another image shape, or no images."""
    if len(data) == 0:
        raise ValueError(f"{what} {data.name}: no images; expected at least one")
    if tuple(data.shape) != tuple(shape):
        raise ValueError(f"{what} {data.name}: images of shape {tuple(data.shape)}; expected {tuple(shape)}, the "
                         "model's (resize with dsmctl prepare --size, or use a built-in shift)")
    return data


def open_sets(meta, source=None, fit_split=None, fit_images="last:1000", reference_split=None, outliers=(), n=1000,
              seed=0, need_fit=True):
    """(fit ArrayData or None, reference ArrayData, {name: outlier ArrayData}, notes) for a model's metadata.

    The model's data.exclude_labels (leave-one-class-out) are removed from the fit and reference images."""
    from ... import data as data_mod

    rec = meta["recipe"]["data"]
    shape = tuple(meta["shape"])
    src = source or rec["source"]
    exclude = list(rec.get("exclude_labels") or [])
    notes = {"source": str(src), "exclude_labels": exclude}
    fit = None
    if need_fit:
        split = fit_split or rec["train_split"]
        full = data_mod.exclude_labels(data_mod.open_split(src, split, rec.get("synthetic")), exclude)
        fit = check_set(data_mod.subset(full, fit_images), shape, "--fit-on")
        notes["fit_seen_in_training"] = _seen(fit, src, split, rec)
    split = reference_split or rec["eval_split"]
    ref_full = data_mod.open_split(src, split, rec.get("synthetic"))
    ref = data_mod.exclude_labels(ref_full, exclude)
    ref = check_set(ref.subset(np.arange(min(n, len(ref)))), shape, "--reference")
    sets = {}
    for spec in outliers:
        kind, _, arg = spec.partition(":")
        if kind in SHIFTS:
            data = shifted(spec, ref, shape, n, seed)
        elif kind == "class":
            if not arg.isdigit():
                raise ValueError(f"--outliers {spec}: expected class:K with K a class number, e.g. class:8")
            data = with_label(ref_full, int(arg), n)
        else:
            data = _open_source(spec, n)
        sets["digits" if kind == "digits" else spec] = check_set(data, shape, "--outliers")
    return fit, ref, sets, notes


def _open_source(spec, n):
    """SRC or SRC:SPLIT (split: a plain name after the last colon; default test), its first n images."""
    from ... import data as data_mod

    if not any(ch in spec for ch in "/.:") and not Path(spec).exists() and spec not in ("demo", "synthetic"):
        raise ValueError(f"--outliers {spec}: unknown outlier set; expected one of {', '.join(SHIFTS)}, class:K, or a "
                         "data source SRC[:SPLIT] (a prepared directory, a .npz file, ...)")
    src, _, split = spec.rpartition(":")
    if not src or "/" in split or "." in split:
        src, split = spec, "test"
    try:
        data = data_mod.open_split(src, split)
    except data_mod.DataError as e:
        raise ValueError(f"--outliers {spec}: {str(e).splitlines()[0]}; expected a built-in set "
                         f"({', '.join(SHIFTS)}, class:K) or a data source SRC[:SPLIT]") from None
    return data.subset(np.arange(min(n, len(data))))


def _seen(fit, source, split, rec):
    """How many fit images the model was trained on (same source and split; data.subset / exclude_labels honoured)."""
    from ... import data as data_mod

    if str(source) != str(rec["source"]) or split != rec["train_split"]:
        return None
    train = data_mod.open_split(source, split, rec.get("synthetic"))
    if rec.get("subset"):
        train = data_mod.subset(train, rec["subset"])
    train = data_mod.exclude_labels(train, list(rec.get("exclude_labels") or []))
    all_fit = fit.index(np.arange(len(fit)))
    all_train = train.index(np.arange(len(train)))
    return int(len(np.intersect1d(all_fit, all_train)))
