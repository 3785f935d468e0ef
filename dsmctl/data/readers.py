"""Split readers and the pixel transforms every source shares.

A reader is one split of a source, read in chunks so that a 1.28M-image set never sits in memory:
  reader.n, reader.shape (one example after transforms: C x H x W, or D), reader.dtype, reader.has_labels
  reader.read(start, stop) -> (array [stop - start, *shape], int64 labels or None)
Sources build readers; the writer (writer.py) streams them into the prepared cache.
"""
from dataclasses import dataclass

import numpy as np

from .cache import DataError

FITS = ("resize", "crop", "pad")


@dataclass(frozen=True)
class Transform:
    """--grayscale / --size / --fit, applied the same way to every source.

    fit=resize: box-filter resize of the short side to `size`, then centre crop (never changes a
    square image of the right size). fit=crop: centre crop, no resampling. fit=pad: zero padding
    around the centre, no resampling. The size is changed first (in RGB), then grey is taken.
    """
    grayscale: bool = False
    size: int | None = None
    fit: str = "resize"

    def out_shape(self, shape):
        if len(shape) != 3:
            return tuple(shape)
        c, h, w = shape
        if self.size is not None:
            h = w = self.size
        return (1 if self.grayscale else c, h, w)

    def describe(self):
        parts = []
        if self.size is not None:
            parts.append({"resize": f"short side box-resized to {self.size}, centre-cropped to {self.size}x{self.size}",
                          "crop": f"centre-cropped to {self.size}x{self.size} (no resampling)",
                          "pad": f"zero-padded to {self.size}x{self.size} (no resampling)"}[self.fit])
        if self.grayscale:
            parts.append("converted to grey (ITU-R 601-2 luma, as PIL's convert('L'))")
        return "; ".join(parts) or "pixels as in the source"

    def pil(self, im, where):
        """A PIL image -> C x H x W uint8 (RGB, or grey with --grayscale)."""
        if im.mode != "RGB":
            im = im.convert("RGB")
        if self.size is not None and im.size != (self.size, self.size):
            im = fit_pil(im, self.size, self.fit, where)
        x = np.asarray(im).transpose(2, 0, 1)
        return rgb_to_gray(x[None])[0] if self.grayscale else x

    def batch(self, x, where):
        """N x C x H x W uint8 -> the same after --size and --grayscale."""
        if x.ndim != 4:
            return x
        if self.size is not None and x.shape[2:] != (self.size, self.size):
            if x.dtype != np.uint8:
                raise DataError(f"{where}: --size needs 8-bit images (got {x.dtype})")
            x = resize_array(x, self.size, self.fit, where)
        if self.grayscale and x.shape[1] == 3:
            if x.dtype != np.uint8:
                raise DataError(f"{where}: --grayscale needs 8-bit images (got {x.dtype})")
            x = rgb_to_gray(x)
        elif self.grayscale and x.shape[1] != 1:
            raise DataError(f"{where}: --grayscale needs 1 or 3 channels, got {x.shape[1]}")
        return x


def rgb_to_gray(x):
    """N x 3 x H x W uint8 -> N x 1 x H x W: PIL's exact fixed-point ITU-R 601-2 luma."""
    x = x.astype(np.uint32)
    g = (x[:, 0] * 19595 + x[:, 1] * 38470 + x[:, 2] * 7471 + 0x8000) >> 16
    return g.astype(np.uint8)[:, None]


def fit_pil(im, size, fit, where):
    from PIL import Image

    w, h = im.size
    if fit == "resize":
        s = size / min(w, h)
        im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BOX)
        w, h = im.size
    elif fit == "crop" and (w < size or h < size):
        raise DataError(f"{where}: image is {w}x{h}, smaller than --size {size}; use --fit pad or --fit resize")
    elif fit == "pad":
        if w > size or h > size:
            raise DataError(f"{where}: image is {w}x{h}, larger than --size {size}; use --fit crop or --fit resize")
        canvas = Image.new(im.mode, (size, size), 0)
        canvas.paste(im, ((size - w) // 2, (size - h) // 2))
        return canvas
    left, top = (w - size) // 2, (h - size) // 2
    return im.crop((left, top, left + size, top + size))


def resize_array(x, size, fit, where):
    from PIL import Image

    out = np.empty((len(x), x.shape[1], size, size), dtype=np.uint8)
    for i, img in enumerate(x):
        im = Image.fromarray(img[0] if img.shape[0] == 1 else np.ascontiguousarray(img.transpose(1, 2, 0)))
        r = np.asarray(fit_pil(im, size, fit, where))
        out[i] = r[None] if r.ndim == 2 else r.transpose(2, 0, 1)
    return out


class ArrayReader:
    """An array already in memory (or memory-mapped), N x C x H x W or N x D."""

    def __init__(self, array, labels=None, transform=Transform(), where="array"):
        self.array, self.labels, self.transform, self.where = array, labels, transform, where
        self.n = len(array)
        self.shape = transform.out_shape(array.shape[1:])
        self.dtype = array.dtype
        self.has_labels = labels is not None

    def read(self, start, stop):
        x = self.transform.batch(np.ascontiguousarray(self.array[start:stop]), self.where)
        y = None if self.labels is None else np.asarray(self.labels[start:stop], dtype=np.int64)
        return x, y


class RangeReader:
    """Items [begin, end) of another reader (--holdout, --limit)."""

    def __init__(self, reader, begin, end):
        self.reader, self.begin = reader, begin
        self.n = end - begin
        self.shape, self.dtype, self.has_labels = reader.shape, reader.dtype, reader.has_labels
        self.where = getattr(reader, "where", "source")

    def read(self, start, stop):
        return self.reader.read(self.begin + start, self.begin + stop)


class ConcatReader:
    """Several readers back to back (image-net.org's train_data_batch_1..10, CIFAR's data_batch_1..5)."""

    def __init__(self, readers):
        self.readers = readers
        self.offsets = np.cumsum([0] + [r.n for r in readers])
        self.n = int(self.offsets[-1])
        self.shape, self.dtype = readers[0].shape, readers[0].dtype
        self.has_labels = all(r.has_labels for r in readers)

    def read(self, start, stop):
        xs, ys = [], []
        for r, off in zip(self.readers, self.offsets[:-1]):
            lo, hi = max(start, off), min(stop, off + r.n)
            if lo < hi:
                x, y = r.read(lo - off, hi - off)
                xs.append(x)
                ys.append(y)
        return np.concatenate(xs), (np.concatenate(ys) if self.has_labels else None)


def npz_member(z, key, where):
    """Member `key` of an open .npz (numpy's NpzFile) as an array; a member stored without the .npy format (numpy
    hands it back as raw bytes) is refused, naming it."""
    value = z[key]
    if not isinstance(value, np.ndarray):
        raise DataError(f"{where}[{key}]: not an array (a raw {type(value).__name__} member, not a .npy inside the "
                        f".npz); expected arrays saved with numpy.savez")
    return value


def check_reader(reader, where):
    """Refuse a split with no examples, or examples with a zero-sized dimension (nothing to learn from)."""
    if reader.n == 0:
        raise DataError(f"{where}: no images (0 items); expected at least one example")
    shape = tuple(reader.shape)
    if not shape or any(d == 0 for d in shape):
        raise DataError(f"{where}: examples of shape {shape} hold 0 values (a zero-sized dimension); expected "
                        f"C x H x W images or D-vectors with every size at least 1")


def check_finite(x, where):
    """Refuse NaN or inf in float data (uint8 pixels are always finite)."""
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = int(x.size - np.isfinite(x).sum())
        raise DataError(f"{where}: {bad:,} values are NaN or inf; expected finite pixel values")


def read_all(reader, limit_bytes=4 << 30, where="source"):
    """The whole split in memory (small sources used without `dsmctl prepare`)."""
    nbytes = reader.n * int(np.prod(reader.shape)) * np.dtype(reader.dtype).itemsize
    if nbytes > limit_bytes:
        raise DataError(f"{where}: {nbytes / 2**30:.1f} GiB is too large to load in memory; prepare it first: "
                        f"dsmctl prepare {where} --out data/NAME, then use data/NAME as data.source")
    x, y = reader.read(0, reader.n)
    check_finite(x, getattr(reader, "where", where))
    return x, y
