"""Subsets for the generalization experiment: first/last N and seeded random disjoint pairs, recorded."""
import numpy as np
import pytest

from dsmctl import data
from dsmctl.data import subsets
from dsmctl.data.cache import DataError

import data_fixtures as fx


def test_first_last_are_the_papers_protocol():
    np.testing.assert_array_equal(subsets.subset_positions(10, "first:3"), [0, 1, 2])
    np.testing.assert_array_equal(subsets.subset_positions(10, "last:3"), [7, 8, 9])


def test_random_pairs_are_disjoint_seeded_and_sorted():
    a, b = subsets.check_disjoint(100, "random:40:7:a", "random:40:7:b")
    assert len(a) == len(b) == 40 and np.all(np.diff(a) > 0)
    np.testing.assert_array_equal(a, subsets.subset_positions(100, "random:40:7:a"))  # same seed, same draw
    assert not np.array_equal(a, subsets.subset_positions(100, "random:40:8:a"))
    assert subsets.partner("random:40:7:a") == "random:40:7:b" and subsets.partner("first:5") == "last:5"


def test_overlapping_subsets_are_caught():
    with pytest.raises(DataError, match="not disjoint: 2 shared"):
        subsets.check_disjoint(10, "first:6", "last:6")
    with pytest.raises(DataError, match="2N <= 10"):
        subsets.subset_positions(10, "random:6:0:a")
    with pytest.raises(DataError, match="expected first:N"):
        subsets.subset_positions(10, "middle:3")


def test_subset_keeps_dataset_indices_and_fingerprint(tmp_path):
    x = fx.images(20, 4)
    data.write_prepared(tmp_path / "p", {"train": x})
    full = data.open_split(tmp_path / "p", "train")
    s = data.subset(full, "last:5")
    np.testing.assert_array_equal(s.index(np.arange(5)), np.arange(15, 20))
    np.testing.assert_array_equal(s.batch(np.arange(5)).numpy(), x[15:] / np.float32(255))
    assert s.fingerprint.startswith(full.fingerprint) and "last:5" in s.fingerprint


def test_recorded_indices_and_run_disjointness(tmp_path):
    x = fx.images(30, 4)
    data.write_prepared(tmp_path / "p", {"train": x})
    full = data.open_split(tmp_path / "p", "train")
    rec_a = data.record_subset(tmp_path / "run_a", data.subset(full, "random:10:3:a"))
    rec_b = data.record_subset(tmp_path / "run_b", data.subset(full, "random:10:3:b"))
    data.record_subset(tmp_path / "run_c", data.subset(full, "first:15"))
    assert rec_a["n"] == 10 and len(rec_a["sha256"]) == 64 and rec_a["sha256"] != rec_b["sha256"]
    np.testing.assert_array_equal(np.load(tmp_path / "run_a" / "subset_indices.npy"),
                                  subsets.subset_positions(30, "random:10:3:a"))
    subsets.check_disjoint_runs(tmp_path / "run_a", tmp_path / "run_b")
    with pytest.raises(DataError, match="not disjoint"):
        subsets.check_disjoint_runs(tmp_path / "run_a", tmp_path / "run_c")
    assert data.record_subset(tmp_path / "run_d", full) is None


def test_training_run_records_subset_and_flips(tmp_path):
    """A few steps of real training on a subset: indices file, hash and flips end up in the run."""
    import json

    from dsmctl.nn.model_file import read_meta
    from dsmctl.engine.trainer import train
    from dsmctl.recipe import load_recipe

    data.write_prepared(tmp_path / "p", {"train": fx.images(40, 8), "test": fx.images(8, 8, seed=1)})
    r = load_recipe(raw={"data": {"source": str(tmp_path / "p"), "subset": "first:16", "hflip": True},
                         "model": {"widths": [8], "mid_width": 8, "layers_per_block": 2},
                         "train": {"steps": 2, "batch_size": 4, "log_every": 1, "ckpt_every": 100},
                         "eval": {"n_images": 4, "batch_size": 4}})
    train(r, tmp_path / "run", progress=False)
    idx = np.load(tmp_path / "run" / "subset_indices.npy")
    np.testing.assert_array_equal(idx, np.arange(16))
    info = read_meta(tmp_path / "run" / "model.safetensors")["data"]
    assert info["subset"] == "first:16" and info["subset_indices_sha256"] == subsets.positions_sha256(idx)
    assert info["hflip"] is True and info["dataset_fingerprint"] == json.loads(
        (tmp_path / "p" / "manifest.json").read_text())["fingerprint"]
