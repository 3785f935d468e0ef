"""The prepared cache: fingerprints, idempotent and atomic writes, resume after an interruption, --verify."""
import json

import numpy as np
import pytest

from dsmctl import data
from dsmctl.data import writer
from dsmctl.data.cache import DataError, is_prepared, load_split, verify
from dsmctl.data.readers import ArrayReader

import data_fixtures as fx


def test_fingerprint_changes_with_one_pixel_not_with_a_second_prepare(tmp_path):
    x = fx.images(6, 8)
    np.save(tmp_path / "a.npy", x)
    m1 = data.prepare(str(tmp_path / "a.npy"), tmp_path / "p1")
    m2 = data.prepare(str(tmp_path / "a.npy"), tmp_path / "p2")
    assert m1["fingerprint"] == m2["fingerprint"]
    y = x.copy()
    y[4, 2, 5, 1] ^= 1  # one pixel, one bit
    np.save(tmp_path / "b.npy", y)
    m3 = data.prepare(str(tmp_path / "b.npy"), tmp_path / "p3")
    assert m3["fingerprint"] != m1["fingerprint"]
    assert m3["splits"]["train"]["sha256"] != m1["splits"]["train"]["sha256"]


def test_fingerprint_covers_labels(tmp_path):
    x = fx.images(4, 4)
    np.savez(tmp_path / "a.npz", train=x, train_labels=np.array([0, 1, 2, 3]))
    np.savez(tmp_path / "b.npz", train=x, train_labels=np.array([0, 1, 2, 2]))
    fa = data.prepare(str(tmp_path / "a.npz"), tmp_path / "pa")["fingerprint"]
    fb = data.prepare(str(tmp_path / "b.npz"), tmp_path / "pb")["fingerprint"]
    assert fa != fb


def test_prepare_is_idempotent_and_refuses_to_clobber(tmp_path):
    np.save(tmp_path / "a.npy", fx.images(3, 4))
    np.save(tmp_path / "b.npy", fx.images(3, 4, seed=1))
    m1 = data.prepare(str(tmp_path / "a.npy"), tmp_path / "out")
    mtime = (tmp_path / "out" / "train.npy").stat().st_mtime_ns
    m2 = data.prepare(str(tmp_path / "a.npy"), tmp_path / "out")
    assert m2.get("reused") and m2["fingerprint"] == m1["fingerprint"]
    assert (tmp_path / "out" / "train.npy").stat().st_mtime_ns == mtime  # nothing rewritten
    with pytest.raises(DataError, match="--force"):
        data.prepare(str(tmp_path / "b.npy"), tmp_path / "out")
    m3 = data.prepare(str(tmp_path / "b.npy"), tmp_path / "out", force=True)
    assert m3["fingerprint"] != m1["fingerprint"]


def test_manifest_records_source_variant_sizes_shape_options(tmp_path):
    fx.write_imagenet_org(tmp_path / "src")
    m = data.prepare(str(tmp_path / "src"), tmp_path / "out", grayscale=True, limit=4)
    saved = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert saved["fingerprint"] == m["fingerprint"] and len(saved["fingerprint"]) == 64
    assert saved["source"] == str((tmp_path / "src").resolve())
    assert saved["variant"].startswith("imagenet8-image-net.org")
    assert saved["splits"]["train"]["n"] == 4 and saved["splits"]["train"]["shape"] == [1, 8, 8]
    assert saved["options"]["grayscale"] is True and saved["options"]["limit"] == 4
    assert "grey" in saved["transform"]


class Failing:
    """A reader that dies after `fail_after` items, like a prepare killed half-way."""

    def __init__(self, inner, fail_after=None):
        self.inner, self.fail_after, self.starts = inner, fail_after, []
        self.n, self.shape, self.dtype, self.has_labels = inner.n, inner.shape, inner.dtype, inner.has_labels

    def read(self, start, stop):
        self.starts.append(start)
        if self.fail_after is not None and stop > self.fail_after:
            raise KeyboardInterrupt
        return self.inner.read(start, stop)


def test_interrupted_prepare_resumes_and_never_looks_complete(tmp_path, monkeypatch):
    x = fx.images(50, 4)
    y = np.arange(50) % 7
    monkeypatch.setattr(writer, "CHUNK_BYTES", 10 * x[0].nbytes)  # 10 items per chunk
    request = {"source": "test", "v": 1}
    out = tmp_path / "out"
    first = Failing(ArrayReader(x, y), fail_after=35)
    with pytest.raises(KeyboardInterrupt):
        writer.write_splits(out, {"train": first}, {"source": "test"}, request=request)
    assert not is_prepared(out) and not out.exists()
    partial = tmp_path / ".out.partial"
    assert json.loads((partial / "progress.json").read_text())["splits"]["train"]["done"] == 30
    second = Failing(ArrayReader(x, y))
    m = writer.write_splits(out, {"train": second}, {"source": "test"}, request=request)
    assert second.starts == [30, 40]  # continued where the first stopped
    assert not partial.exists() and is_prepared(out)
    d = load_split(out, "train")
    np.testing.assert_array_equal(np.asarray(d.array), x)
    np.testing.assert_array_equal(np.asarray(d.labels), y)
    assert m["fingerprint"] == data.write_prepared(tmp_path / "ref", {"train": x}, {"train": y})["fingerprint"]


def test_a_different_request_discards_a_stale_partial(tmp_path, monkeypatch):
    x = fx.images(20, 4)
    monkeypatch.setattr(writer, "CHUNK_BYTES", 5 * x[0].nbytes)
    with pytest.raises(KeyboardInterrupt):
        writer.write_splits(tmp_path / "out", {"train": Failing(ArrayReader(x), 12)}, {}, request={"r": 1})
    fresh = Failing(ArrayReader(x[::-1].copy()))
    writer.write_splits(tmp_path / "out", {"train": fresh}, {}, request={"r": 2})
    assert fresh.starts[0] == 0
    np.testing.assert_array_equal(np.asarray(load_split(tmp_path / "out", "train").array), x[::-1])


def test_interrupted_force_keeps_the_old_cache(tmp_path, monkeypatch):
    x = fx.images(20, 4)
    old = data.write_prepared(tmp_path / "out", {"train": x})
    monkeypatch.setattr(writer, "CHUNK_BYTES", 5 * x[0].nbytes)
    with pytest.raises(KeyboardInterrupt):
        writer.write_splits(tmp_path / "out", {"train": Failing(ArrayReader(x[::-1].copy()), 12)}, {},
                            request={"other": 1}, force=True)
    assert verify(tmp_path / "out")[0] and data.read_manifest(tmp_path / "out")["fingerprint"] == old["fingerprint"]


def test_verify_detects_corruption(tmp_path):
    data.write_prepared(tmp_path / "out", {"train": fx.images(4, 4)}, {"train": np.arange(4)})
    ok, report = verify(tmp_path / "out")
    assert ok and set(report) == {"train", "train.labels", "fingerprint"}
    arr = np.load(tmp_path / "out" / "train.npy", mmap_mode="r+")
    arr[1, 0, 0, 0] ^= 0x10
    arr.flush()
    del arr
    ok, report = verify(tmp_path / "out")
    assert not ok and report["train"][0] != report["train"][1]


def test_cli_prepare_verify_and_progress_lines(tmp_path, capsys, monkeypatch):
    np.save(tmp_path / "a.npy", fx.images(3, 4))
    assert fx.run_cli(["prepare", tmp_path / "a.npy", "--out", tmp_path / "o", "--json"], monkeypatch) == 0
    captured = capsys.readouterr()
    manifest = json.loads(captured.out)
    assert "[prepare] write train: 3/3" in captured.err and manifest["fingerprint"] in captured.err
    assert fx.run_cli(["prepare", "--verify", tmp_path / "o"], monkeypatch) == 0
    assert "train: ok" in capsys.readouterr().err
    arr = np.load(tmp_path / "o" / "train.npy", mmap_mode="r+")
    arr[0, 0, 0, 0] ^= 1
    arr.flush()
    del arr
    assert fx.run_cli(["prepare", "--verify", tmp_path / "o"], monkeypatch) == 1
    assert "train: MISMATCH" in capsys.readouterr().err


def test_quick_check_sees_size_and_sampled_blocks_full_sees_every_byte(tmp_path):
    """train --verify-data: quick = exact size + 64 sampled blocks (a change between them goes unseen, as
    documented), full = every sha256."""
    from dsmctl.data.cache import SAMPLE_BLOCK, SAMPLE_BLOCKS, check_prepared

    x = np.random.default_rng(0).integers(0, 256, (80, 1, 256, 256), np.uint8)  # 5 MiB: sampled, not whole
    np.save(tmp_path / "a.npy", x)
    data.prepare(str(tmp_path / "a.npy"), tmp_path / "p")
    f = tmp_path / "p" / "train.npy"
    pristine = f.read_bytes()
    check_prepared(tmp_path / "p", "quick")
    check_prepared(tmp_path / "p", "full")
    step = (len(pristine) - SAMPLE_BLOCK) / (SAMPLE_BLOCKS - 1)
    unsampled = round(step) + SAMPLE_BLOCK + 10  # between the first two sampled blocks
    assert unsampled < round(step * 2)
    for offset, quick_sees in ((len(pristine) - 3, True), (unsampled, False)):
        raw = bytearray(pristine)
        raw[offset] ^= 1
        f.write_bytes(bytes(raw))
        if quick_sees:
            with pytest.raises(DataError, match="train.npy.*sampled sha256"):
                check_prepared(tmp_path / "p", "quick")
        else:
            check_prepared(tmp_path / "p", "quick")
        with pytest.raises(DataError, match="train.npy.*sha256 differs"):
            check_prepared(tmp_path / "p", "full")
        check_prepared(tmp_path / "p", "skip")
    f.write_bytes(pristine[:-1])
    with pytest.raises(DataError, match="train.npy.*bytes, but the manifest"):
        check_prepared(tmp_path / "p", "quick")


def test_data_error_mid_write_removes_the_partial_folder_and_the_lock(tmp_path):
    x = np.zeros((40000, 1, 16, 16), np.float32)  # 5 chunks of 8192 rows; the NaN is in the last
    x[-1, 0, 0, 0] = np.nan
    with pytest.raises(DataError, match=r"items .*NaN or inf"):
        writer.write_prepared(tmp_path / "p", {"train": x})
    assert sorted(p.name for p in tmp_path.iterdir()) == []
