"""Every supported layout, fabricated tiny: the prepared pixels must equal the source pixels exactly
(channel order, orientation, label offset)."""
import json

import numpy as np
import pytest

from dsmctl import data
from dsmctl.data.cache import load_split

import data_fixtures as fx


def read_back(out):
    manifest = json.loads((out / "manifest.json").read_text())
    got = {}
    for split in manifest["splits"]:
        d = load_split(out, split)
        got[split] = (np.asarray(d.array), None if d.labels is None else np.asarray(d.labels))
    return manifest, got


def assert_same(got, expected):
    assert set(got) == set(expected)
    for split, (x, y) in expected.items():
        gx, gy = got[split]
        assert gx.dtype == np.uint8 and gx.shape == x.shape, (split, gx.shape, x.shape)
        np.testing.assert_array_equal(gx, x, err_msg=split)
        if y is not None:
            np.testing.assert_array_equal(gy, y, err_msg=f"{split} labels")


@pytest.mark.parametrize("fmt,protocol", [("npz", None), ("pickle", 2), ("pickle", 4)])
def test_imagenet_org_batches(tmp_path, fmt, protocol):
    expected = fx.write_imagenet_org(tmp_path / "src", fmt=fmt, protocol=protocol)
    data.prepare(str(tmp_path / "src"), tmp_path / "out")
    manifest, got = read_back(tmp_path / "out")
    assert_same(got, expected)
    assert manifest["kind"] == "image-net.org" and "0-based" in manifest["labels"]
    assert manifest["splits"]["validation"]["n"] == 3
    # Labels 1 and 1000 in the file come back as 0 and 999.
    assert got["validation"][1][:2].tolist() == [0, 999]


def test_imagenet_org_npz_and_pickle_give_the_same_fingerprint(tmp_path):
    fx.write_imagenet_org(tmp_path / "a", fmt="npz")
    fx.write_imagenet_org(tmp_path / "b", fmt="pickle")
    ma = data.prepare(f"imagenet-org:{tmp_path / 'a'}", tmp_path / "pa")
    mb = data.prepare(str(tmp_path / "b"), tmp_path / "pb")
    assert ma["fingerprint"] == mb["fingerprint"]
    assert ma["file_format"] == "npz" and mb["file_format"] == "pickle"


def test_imagenet_org_channel_order_and_orientation(tmp_path):
    """A pure-red image whose top row is bright: plane 0 must be R and row 0 the top."""
    x = np.zeros((1, 3, 4, 4), np.uint8)
    x[0, 0] = 200
    x[0, 0, 0, :] = 255
    (tmp_path / "src").mkdir()
    np.savez(tmp_path / "src" / "val_data.npz", data=x.reshape(1, -1), labels=np.array([3]))
    data.prepare(str(tmp_path / "src"), tmp_path / "out")
    got = np.asarray(load_split(tmp_path / "out", "validation").array)
    np.testing.assert_array_equal(got, x)
    from PIL import Image
    rgb = got[0].transpose(1, 2, 0)
    assert rgb[0, 0].tolist() == [255, 0, 0] and rgb[3, 0].tolist() == [200, 0, 0]
    Image.fromarray(rgb)  # a valid H x W x 3 image


@pytest.mark.parametrize("kind", ["image", "array3d"])
def test_hf_parquet_folder(tmp_path, kind):
    expected = fx.write_hf_parquet(tmp_path / "hf", kind)
    data.prepare(f"hf:{tmp_path / 'hf'}", tmp_path / "out")
    manifest, got = read_back(tmp_path / "out")
    assert_same(got, expected)
    assert manifest["kind"] == "hf-local"
    assert manifest["hf"]["image_column"] == "image" and manifest["hf"]["label_column"] == "label"


def test_hf_detected_without_prefix_and_single_parquet_file(tmp_path):
    expected = fx.write_hf_parquet(tmp_path / "hf", "image")
    m = data.prepare(str(tmp_path / "hf"), tmp_path / "o1", splits=["validation"])
    assert list(m["splits"]) == ["validation"]
    f = tmp_path / "hf" / "data" / "train-00000-of-00001.parquet"
    data.prepare(str(f), tmp_path / "o2")
    _, got = read_back(tmp_path / "o2")
    assert_same(got, {"train": expected["train"]})


def test_hf_save_to_disk_folder(tmp_path):
    from datasets import Array3D, Dataset, Features, Value

    x = fx.images(4, 8)
    feats = Features({"image": Array3D(shape=(8, 8, 3), dtype="uint8"), "label": Value("int64")})
    Dataset.from_dict({"image": x.transpose(0, 2, 3, 1), "label": [3, 2, 1, 0]}, features=feats).save_to_disk(str(tmp_path / "disk"))
    data.prepare(str(tmp_path / "disk"), tmp_path / "out")
    _, got = read_back(tmp_path / "out")
    assert_same(got, {"train": (x, np.array([3, 2, 1, 0]))})


@pytest.mark.parametrize("gz", [False, True])
def test_torchvision_mnist_raw(tmp_path, gz):
    expected = fx.write_mnist_root(tmp_path / "root", "MNIST", gz=gz)
    data.prepare(f"mnist:{tmp_path / 'root'}", tmp_path / "out")
    manifest, got = read_back(tmp_path / "out")
    assert_same(got, expected)
    assert manifest["variant"] == "mnist"


def test_torchvision_fashion_mnist_detected_and_debian_layout(tmp_path):
    expected = fx.write_mnist_root(tmp_path / "root", "FashionMNIST", gz=True)
    data.prepare(str(tmp_path / "root"), tmp_path / "o1")  # detected from FashionMNIST/raw
    _, got = read_back(tmp_path / "o1")
    assert_same(got, expected)
    # Debian's dataset-fashion-mnist: the gzipped files directly in one folder.
    debian = tmp_path / "root" / "FashionMNIST" / "raw"
    data.prepare(f"fashion-mnist:{debian}", tmp_path / "o2")
    _, got = read_back(tmp_path / "o2")
    assert_same(got, expected)


def test_torchvision_cifar10(tmp_path):
    expected = fx.write_cifar_root(tmp_path / "root")
    data.prepare(f"cifar10:{tmp_path / 'root'}", tmp_path / "out")
    _, got = read_back(tmp_path / "out")
    assert_same(got, expected)


def test_image_folder_with_class_subfolders(tmp_path):
    expected = fx.write_image_folder(tmp_path / "imgs")
    data.prepare(str(tmp_path / "imgs"), tmp_path / "out")
    manifest, got = read_back(tmp_path / "out")
    assert_same(got, expected)
    assert manifest["classes"] == ["cat", "dog"]


def test_arrays_npy_npz_layouts(tmp_path):
    x = fx.images(5, 8)
    np.save(tmp_path / "nhwc.npy", x.transpose(0, 2, 3, 1))
    np.savez(tmp_path / "splits.npz", train=x[:3], test=x[3:], train_labels=np.array([2, 1, 0]))
    data.prepare(str(tmp_path / "nhwc.npy"), tmp_path / "o1")
    _, got = read_back(tmp_path / "o1")
    assert_same(got, {"train": (x, None)})
    data.prepare(f"arrays:{tmp_path / 'splits.npz'}", tmp_path / "o2")
    _, got = read_back(tmp_path / "o2")
    assert_same(got, {"train": (x[:3], np.array([2, 1, 0])), "test": (x[3:], None)})


def test_grayscale_matches_pil_and_is_the_same_for_every_source(tmp_path):
    from PIL import Image

    expected = fx.write_image_folder(tmp_path / "imgs", split_dirs=("train",))
    x = expected["train"][0]
    np.save(tmp_path / "x.npy", x)
    data.prepare(str(tmp_path / "imgs"), tmp_path / "g1", grayscale=True)
    data.prepare(str(tmp_path / "x.npy"), tmp_path / "g2", grayscale=True)
    pil = np.stack([np.asarray(Image.fromarray(img.transpose(1, 2, 0)).convert("L")) for img in x])[:, None]
    for out in ("g1", "g2"):
        np.testing.assert_array_equal(np.asarray(load_split(tmp_path / out, "train").array), pil)


def test_size_fit_modes(tmp_path):
    x = fx.images(2, 8)
    np.save(tmp_path / "x.npy", x)
    data.prepare(str(tmp_path / "x.npy"), tmp_path / "crop", size=4, fit="crop")
    np.testing.assert_array_equal(np.asarray(load_split(tmp_path / "crop", "train").array), x[:, :, 2:6, 2:6])
    data.prepare(str(tmp_path / "x.npy"), tmp_path / "pad", size=12, fit="pad")
    padded = np.asarray(load_split(tmp_path / "pad", "train").array)
    np.testing.assert_array_equal(padded[:, :, 2:10, 2:10], x)
    assert padded[:, :, :2].max() == 0 and padded[:, :, :, 10:].max() == 0
    m = data.prepare(str(tmp_path / "x.npy"), tmp_path / "resize", size=4)
    box = x.reshape(2, 3, 4, 2, 4, 2).astype(float).mean((3, 5))  # box filter, exact 2x
    got = np.asarray(load_split(tmp_path / "resize", "train").array).astype(float)
    assert np.abs(got - box).max() <= 1
    assert "box-resized" in m["transform"]


def test_holdout_and_limit(tmp_path):
    x = fx.images(10, 4)
    np.save(tmp_path / "x.npy", x)
    data.prepare(str(tmp_path / "x.npy"), tmp_path / "out", holdout=3, limit=5)
    _, got = read_back(tmp_path / "out")
    assert_same(got, {"train": (x[:5], None), "test": (x[7:], None)})


DEBIAN_FMNIST = "/usr/share/datasets/fashion-mnist"
FMNIST_FINGERPRINT = "6dafc08f3dfc964ca5ba5ef7fcfbbfd3d03134b71828dd013014b606adcd6511"


@pytest.mark.skipif(not __import__("os").path.isdir(DEBIAN_FMNIST), reason="apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist_from_debian(tmp_path):
    m = data.prepare(f"fashion-mnist:{DEBIAN_FMNIST}", tmp_path / "fm")
    assert {k: (v["n"], v["shape"]) for k, v in m["splits"].items()} == {"train": (60000, [1, 28, 28]),
                                                                         "test": (10000, [1, 28, 28])}
    labels = np.asarray(load_split(tmp_path / "fm", "train").labels)
    assert np.bincount(labels).tolist() == [6000] * 10
    assert m["fingerprint"] == FMNIST_FINGERPRINT  # docs/data.md quotes it


def test_local_copy_of_a_known_hub_variant_is_named(tmp_path):
    fx.write_hf_parquet(tmp_path / "sradc", "array3d")
    m = data.prepare(f"hf:{tmp_path / 'sradc'}", tmp_path / "out", variant="sradc/imagenet_resized_64x64")
    assert m["variant"].startswith("imagenet64-hf-sradc")
    assert any("1,281,167" in w for w in m["warnings"])  # a 5-row fake is not the documented train split
    assert m["options"]["variant"] == "sradc/imagenet_resized_64x64"
