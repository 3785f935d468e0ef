"""Tiny datasets fabricated in every layout dsmctl prepare reads (shared by tests/test_data_*.py).

Every builder returns the pixels it wrote as N x C x H x W uint8 (the exact expected prepared array)
and the labels it expects back (0-based).
"""
import gzip
import pickle
from pathlib import Path

import numpy as np


def images(n, side=8, channels=3, seed=0):
    """Random pixels with a marked corner so orientation errors cannot cancel out."""
    x = np.random.default_rng(seed).integers(0, 256, (n, channels, side, side), dtype=np.uint8)
    x[:, :, 0, 0] = 255  # top-left bright, bottom-right dark in every image
    x[:, :, -1, -1] = 0
    return x


def imagenet_batch(x, labels_1based):
    """image-net.org layout: N x 3*S*S, the R plane then G then B, each row-major."""
    return {"data": x.reshape(len(x), -1), "labels": list(map(int, labels_1based)),
            "mean": x.reshape(len(x), -1).mean(0)}


def write_imagenet_org(root, fmt="npz", side=8, sizes=(5, 4), n_val=3, protocol=4):
    """Folders as unpacked from the official zips: train batches in two folders, val in a third."""
    root = Path(root)
    xs, ys = [], []
    for i, n in enumerate(sizes, start=1):
        x = images(n, side, seed=10 + i)
        y = np.random.default_rng(i).integers(1, 1001, n)
        folder = root / ("Imagenet_train_part1" if i <= len(sizes) // 2 + 1 else "Imagenet_train_part2")
        _write_batch(folder / f"train_data_batch_{i}", imagenet_batch(x, y), fmt, protocol)
        xs.append(x)
        ys.append(y - 1)
    xv = images(n_val, side, seed=99)
    yv = np.array([1, 1000, 17][:n_val] + [5] * max(0, n_val - 3))
    _write_batch(root / "Imagenet_val" / "val_data", imagenet_batch(xv, yv), fmt, protocol)
    return {"train": (np.concatenate(xs), np.concatenate(ys)), "validation": (xv, yv - 1)}


def _write_batch(path, d, fmt, protocol):
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "npz":
        np.savez(path.with_name(path.name + ".npz"), data=d["data"], labels=np.array(d["labels"]), mean=d["mean"])
    else:
        with open(path, "wb") as f:
            pickle.dump(d, f, protocol=protocol)


def write_idx(path, array, gz):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    raw = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path = Path(str(path) + (".gz" if gz else ""))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if gz else raw)


def write_mnist_root(root, folder="FashionMNIST", gz=False, n_train=6, n_test=4):
    raw = Path(root) / folder / "raw"
    out = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        x = images(n, 28, 1, seed=len(prefix))[:, 0]
        y = np.arange(n) % 10
        write_idx(raw / f"{prefix}-images-idx3-ubyte", x, gz)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", y.astype(np.uint8), gz)
        out[split] = (x[:, None], y)
    return out


def write_cifar_root(root, n=3):
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    xs, ys = [], []
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        x = images(n, 32, seed=i)
        y = (np.arange(n) + i) % 10
        # CIFAR's own pickles are Python 2 dicts with bytes keys.
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": x.reshape(n, -1), b"labels": y.tolist(), b"batch_label": b"x"}, f, protocol=2)
        xs.append(x)
        ys.append(y)
    return {"train": (np.concatenate(xs[:5]), np.concatenate(ys[:5])), "test": (xs[5], ys[5])}


def write_image_folder(root, side=8, classes=("cat", "dog"), per_class=(3, 2), split_dirs=("train", "test")):
    from PIL import Image

    out = {}
    for s, split in enumerate(split_dirs):
        xs, ys = [], []
        for c, (name, n) in enumerate(zip(classes, per_class)):
            x = images(n, side, seed=100 * s + c)
            for i, img in enumerate(x):
                p = Path(root) / split / name / f"{i:03d}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img.transpose(1, 2, 0)).save(p)
            xs.append(x)
            ys += [c] * n
        out[split] = (np.concatenate(xs), np.array(ys))
    return out


def write_hf_parquet(root, kind="image", side=8, sizes=(("train", 5), ("validation", 3))):
    """A Hub-style folder of parquet files: data/<split>-00000-of-00001.parquet with HF features."""
    from datasets import Array3D, ClassLabel, Dataset, Features, Image, Value
    from PIL import Image as PILImage

    out = {}
    for i, (split, n) in enumerate(sizes):
        x = images(n, side, seed=200 + i)
        y = np.arange(n) % 3
        hwc = x.transpose(0, 2, 3, 1)
        if kind == "image":
            feats = Features({"image": Image(), "label": ClassLabel(names=["a", "b", "c"])})
            ds = Dataset.from_dict({"image": [PILImage.fromarray(a) for a in hwc], "label": y.tolist()}, features=feats)
        else:
            feats = Features({"image": Array3D(shape=(side, side, 3), dtype="uint8"), "label": Value("int32")})
            ds = Dataset.from_dict({"image": hwc, "label": y.astype(np.int32)}, features=feats)
        path = Path(root) / "data" / f"{split}-00000-of-00001.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.to_parquet(str(path))
        out[split] = (x, y)
    return out


def run_cli(args, monkeypatch):
    """Run `dsmctl ARGS` in this process (sys.argv patched); returns the exit code."""
    from dsmctl import cli

    monkeypatch.setattr("sys.argv", ["dsmctl", *map(str, args)])
    try:
        cli.main()
    except SystemExit as e:
        return e.code or 0
    return 0
