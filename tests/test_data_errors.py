"""Bad input: one line naming the file and what was expected, exit code 2, nothing half-written."""
import pickle

import numpy as np
import pytest

import data_fixtures as fx


def one_line_error(args, monkeypatch, capsys):
    code = fx.run_cli(args, monkeypatch)
    full = capsys.readouterr().err
    # Only lines from the fixtures' own datasets calls (progress bars) may come before the error.
    lines = [line for line in full.strip().splitlines() if not any(k in line for k in ("ba/s", "examples/s", "%|"))]
    assert code == 2, full
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in full, full
    return lines[0]


def truncate(path, keep=0.5):
    raw = path.read_bytes()
    path.write_bytes(raw[:int(len(raw) * keep)])


def make_imagenet(tmp_path, fmt="npz"):
    fx.write_imagenet_org(tmp_path / "src", fmt=fmt)
    return tmp_path / "src"


CASES = {}


def case(fn):
    CASES[fn.__name__] = fn
    return fn


@case
def npz_wrong_layout(tmp_path):
    np.savez(tmp_path / "x.npz", a=np.zeros((2, 4, 4), np.uint8), b=np.zeros((2, 4, 4), np.uint8))
    return [tmp_path / "x.npz"], "x.npz", "expected arrays named train"


@case
def npy_wrong_shape(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 1, 3, 4, 4), np.uint8))
    return [tmp_path / "x.npy"], "x.npy", "expected N x C x H x W"


@case
def npy_wrong_dtype(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 4, 4), np.int32))
    return [tmp_path / "x.npy"], "x.npy", "expected uint8"


@case
def imagenet_missing_labels(tmp_path):
    (tmp_path / "src").mkdir()
    np.savez(tmp_path / "src" / "val_data.npz", data=np.zeros((2, 192), np.uint8))
    return [tmp_path / "src"], "val_data.npz", "labels"


@case
def imagenet_row_not_3_planes(tmp_path):
    (tmp_path / "src").mkdir()
    np.savez(tmp_path / "src" / "val_data.npz", data=np.zeros((2, 100), np.uint8), labels=np.array([1, 2]))
    return [tmp_path / "src"], "val_data.npz", "expected 3*S*S"


@case
def imagenet_zero_based_labels(tmp_path):
    (tmp_path / "src").mkdir()
    np.savez(tmp_path / "src" / "val_data.npz", data=np.zeros((2, 192), np.uint8), labels=np.array([0, 2]))
    return [tmp_path / "src"], "val_data.npz", "1-based"


@case
def imagenet_truncated_npz(tmp_path):
    src = make_imagenet(tmp_path)
    truncate(src / "Imagenet_val" / "val_data.npz")
    return [src], "val_data.npz", "truncated"


@case
def imagenet_truncated_pickle(tmp_path):
    src = make_imagenet(tmp_path, fmt="pickle")
    truncate(src / "Imagenet_val" / "val_data")
    return [src], "val_data", "not a readable pickled batch"


@case
def imagenet_missing_batch(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in (1, 3):
        np.savez(src / f"train_data_batch_{i}.npz", data=fx.images(2, 4).reshape(2, -1), labels=np.array([1, 2]))
    return [src], "train_data_batch_2", "missing"


@case
def imagenet_mixed_sizes(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    np.savez(src / "train_data_batch_1.npz", data=np.zeros((2, 192), np.uint8), labels=np.array([1, 2]))
    np.savez(src / "val_data.npz", data=np.zeros((2, 768), np.uint8), labels=np.array([1, 2]))
    return [src], "src", "different image sizes"


@case
def malicious_pickle(tmp_path):
    class Evil:
        def __reduce__(self):
            import os
            return (os.system, ("echo pwned",))

    src = tmp_path / "src"
    src.mkdir()
    with open(src / "val_data", "wb") as f:
        pickle.dump({"data": Evil(), "labels": [1]}, f)
    return [src], "val_data", "refused global"


@case
def non_image_png(tmp_path):
    fx.write_image_folder(tmp_path / "imgs", split_dirs=("train",))
    (tmp_path / "imgs" / "train" / "cat" / "broken.png").write_text("not an image")
    return [tmp_path / "imgs"], "broken.png", "not a readable image"


@case
def unknown_file_in_image_folder(tmp_path):
    fx.write_image_folder(tmp_path / "imgs", split_dirs=("train",))
    (tmp_path / "imgs" / "train" / "cat" / "model.bin").write_bytes(b"\0" * 10)
    return [tmp_path / "imgs"], "model.bin", "not an image file"


@case
def mixed_sizes_without_size(tmp_path):
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / "a.png")
    Image.new("RGB", (8, 6)).save(tmp_path / "imgs" / "b.png")
    return [tmp_path / "imgs"], "b.png", "pass --size"


@case
def size_larger_than_image_with_crop(tmp_path):
    np.save(tmp_path / "x.npy", fx.images(2, 8))
    return [tmp_path / "x.npy", "--size", "16", "--fit", "crop"], "x.npy", "smaller than --size 16"


@case
def size_smaller_than_image_with_pad(tmp_path):
    fx.write_image_folder(tmp_path / "imgs", split_dirs=("train",))
    return [tmp_path / "imgs", "--size", "4", "--fit", "pad"], ".png", "larger than --size 4"


@case
def truncated_idx(tmp_path):
    fx.write_mnist_root(tmp_path / "root", "MNIST", gz=False)
    truncate(tmp_path / "root" / "MNIST" / "raw" / "train-images-idx3-ubyte", 0.7)
    return ["mnist:" + str(tmp_path / "root")], "train-images-idx3-ubyte", "truncated"


@case
def idx_folder_without_kind(tmp_path):
    fx.write_mnist_root(tmp_path / "root", "MNIST", gz=True)
    return [tmp_path / "root" / "MNIST" / "raw"], "raw", "fashion-mnist:"


@case
def hf_without_image_column(tmp_path):
    from datasets import Dataset

    (tmp_path / "hf").mkdir()
    Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]}).to_parquet(str(tmp_path / "hf" / "train.parquet"))
    return ["hf:" + str(tmp_path / "hf")], "hf", "no image column"


@case
def hf_corrupt_image_bytes(tmp_path):
    from datasets import Dataset, Features, Image, Value

    (tmp_path / "hf").mkdir()
    feats = Features({"image": Image(), "label": Value("int64")})
    Dataset.from_dict({"image": [{"bytes": b"garbage", "path": None}], "label": [0]}, features=feats).to_parquet(
        str(tmp_path / "hf" / "train.parquet"))
    return ["hf:" + str(tmp_path / "hf")], "row 0", "not a decodable image"


@case
def missing_source(tmp_path):
    return [tmp_path / "nope"], "nope", "no such file or folder"


@case
def unknown_split(tmp_path):
    np.save(tmp_path / "x.npy", fx.images(2, 4))
    return [tmp_path / "x.npy", "--split", "validation"], "x.npy", "no split 'validation'"


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gives_one_line(name, tmp_path, monkeypatch, capsys):
    args, names, expected = CASES[name](tmp_path)
    out = tmp_path / "out"
    err = one_line_error(["prepare", *args, "--out", out], monkeypatch, capsys)
    assert names in err and expected in err, err
    assert not (out / "manifest.json").exists()


def test_hub_id_offline_fails_fast_with_a_local_recipe(tmp_path, monkeypatch, capsys):
    """With HF_HUB_OFFLINE set, a hub id fails at once: no probe of the Hub, no connection attempted (checked by
    recording them, not by a stopwatch), and the error is the offline one with the local recipe."""
    import socket

    from dsmctl.data import hf

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    attempts = []

    def probe(*args, **kwargs):
        attempts.append("hub_reachable")
        return False

    def connect(self, address):
        attempts.append(address)
        raise OSError("no network in this test")

    monkeypatch.setattr(hf, "hub_reachable", probe)
    monkeypatch.setattr(socket.socket, "connect", connect)
    err = one_line_error(["prepare", "someone/not-cached-here", "--out", tmp_path / "out"], monkeypatch, capsys)
    assert attempts == []
    assert "someone/not-cached-here" in err and "unreachable (offline mode)" in err and "dsmctl prepare hf:DIR" in err
