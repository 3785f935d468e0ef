"""MNIST, Fashion-MNIST and CIFAR-10 read from the files torchvision keeps under its root (never downloaded).

  mnist:ROOT          ROOT/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
  fashion-mnist:ROOT  ROOT/FashionMNIST/raw/... (same names); Debian's `dataset-fashion-mnist` package
                      installs the gzipped files in /usr/share/datasets/fashion-mnist, readable as is
  cifar10:ROOT        ROOT/cifar-10-batches-py/{data_batch_1..5, test_batch} (pickles, read safely)
ROOT may also be the raw folder itself. Splits are torchvision's: train and test, in file order.
"""
import gzip
from pathlib import Path

import numpy as np

from .cache import DataError
from .readers import ArrayReader, Transform
from .safe_pickle import load_dict

KINDS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "cifar-10-batches-py"}
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
CIFAR_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def _find(folder, name):
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _idx_folder(root, kind):
    root = Path(root)
    for folder in (root / KINDS[kind] / "raw", root / "raw", root):
        if _find(folder, IDX_FILES["train"][0]) or _find(folder, IDX_FILES["test"][0]):
            return folder
    raise DataError(f"{root}: no {IDX_FILES['train'][0]}[.gz] in {root / KINDS[kind] / 'raw'} or {root}; expected "
                    f"torchvision's {kind} root (see docs/data.md; Debian: apt-get install dataset-{kind})")


def read_idx(path):
    """An IDX file (LeCun's MNIST format, optionally gzipped) -> numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: unreadable ({e}); expected an IDX file (gzipped or not)") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file (magic {raw[:4].hex()}, expected 000008xx)")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(raw) != offset + int(np.prod(dims)):
        raise DataError(f"{path}: {len(raw) - offset} data bytes for dimensions {dims}; the file is truncated or corrupt")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def load_idx(root, kind, transform=Transform()):
    folder = _idx_folder(root, kind)
    splits, files = {}, []
    for split, (img_name, lab_name) in IDX_FILES.items():
        img, lab = _find(folder, img_name), _find(folder, lab_name)
        if img is None:
            continue
        if lab is None:
            raise DataError(f"{folder}: {img.name} has no {lab_name}[.gz] beside it")
        x, y = read_idx(img), read_idx(lab)
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{img}: images {x.shape} and labels {y.shape}; expected N x H x W and N")
        splits[split] = ArrayReader(x[:, None], y.astype(np.int64), transform, str(img))
        files += [img, lab]
    info = {"source": str(Path(root).resolve()), "kind": "torchvision-raw", "variant": kind,
            "files": [str(f) for f in files], "labels": "0-based class numbers, as in the files"}
    return splits, info, _signature(files)


def load_cifar10(root, transform=Transform()):
    root = Path(root)
    folder = next((f for f in (root / KINDS["cifar10"], root) if (f / "test_batch").is_file()
                   or (f / "data_batch_1").is_file()), None)
    if folder is None:
        raise DataError(f"{root}: no cifar-10-batches-py/data_batch_1 or test_batch; expected torchvision's CIFAR10 root")
    splits, files = {}, []
    for split, names in CIFAR_FILES.items():
        paths = [folder / n for n in names]
        if not all(p.is_file() for p in paths):
            continue
        xs, ys = [], []
        for p in paths:
            d = load_dict(p)
            data, labels = d.get("data"), d.get("labels")
            if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 \
                    or labels is None or len(labels) != len(data):
                raise DataError(f"{p}: expected a CIFAR-10 batch with data (N x 3072 uint8, R, G, B planes of 32 x 32) "
                                f"and labels (N)")
            xs.append(data.reshape(-1, 3, 32, 32))
            ys.append(np.asarray(labels, dtype=np.int64))
        splits[split] = ArrayReader(np.concatenate(xs), np.concatenate(ys), transform, str(folder))
        files += paths
    if not splits:
        raise DataError(f"{folder}: incomplete CIFAR-10 (expected data_batch_1..5 and test_batch)")
    info = {"source": str(root.resolve()), "kind": "torchvision-raw", "variant": "cifar10",
            "files": [str(f) for f in files], "labels": "0-based class numbers, as in the files"}
    return splits, info, _signature(files)


def _signature(files):
    return [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files]
