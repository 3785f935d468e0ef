"""The loader: exact float conversion, flips on uint8, sharding by index, in-order prefetch."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dsmctl import data

import data_fixtures as fx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.prefetch import Prefetch, random_flips, shard  # noqa: E402  (bench/loader.py's helpers)


@pytest.fixture
def cache(tmp_path):
    x = fx.images(40, 8)
    data.write_prepared(tmp_path / "p", {"train": x})
    return data.open_split(tmp_path / "p", "train"), x


def test_batch_is_exactly_value_over_255_in_requested_order(cache):
    d, x = cache
    pos = np.array([7, 3, 39, 3, 0])
    got = d.batch(pos)
    want = torch.from_numpy(x[pos]).to(torch.float32) / 255  # the torch conversion used on devices
    assert got.dtype == torch.float32 and torch.equal(got, want)
    assert torch.equal(d.batch(pos, dtype=torch.float64), torch.from_numpy(x[pos]).double() / 255)


def test_flips_mirror_exactly_the_masked_images(cache):
    d, x = cache
    pos = np.arange(10)
    mask = np.array([True, False] * 5)
    got = d.batch(pos, flip=torch.from_numpy(mask))
    plain = d.batch(pos)
    assert torch.equal(got[mask], plain[mask].flip(-1)) and torch.equal(got[~mask], plain[~mask])
    assert got[0, 0, 0, -1] == 1.0  # the bright top-left corner moved to the top-right


def test_random_flips_are_a_function_of_seed_and_step():
    a = random_flips(0, 5, 1000)
    assert np.array_equal(a, random_flips(0, 5, 1000)) and not np.array_equal(a, random_flips(0, 6, 1000))
    assert 400 < a.sum() < 600


def test_shards_partition_the_global_batch():
    g = np.random.default_rng(0).permutation(100)[:12]
    parts = [shard(g, r, 3) for r in range(3)]
    np.testing.assert_array_equal(np.concatenate(parts), g)
    with pytest.raises(ValueError, match="not divisible"):
        shard(g, 0, 5)


def test_prefetch_keeps_step_order_and_raises_errors():
    import time

    def make(step):
        time.sleep(0.001 * (step % 3))
        return step * 10

    assert list(Prefetch(make, range(20), depth=4, workers=2)) == [s * 10 for s in range(20)]

    def broken(step):
        if step == 3:
            raise RuntimeError("bad step")
        return step

    with pytest.raises(RuntimeError, match="bad step"):
        list(Prefetch(broken, range(6)))
