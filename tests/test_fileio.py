"""Atomic writes: an interrupted write leaves the previous file whole and no temporary behind."""
import json
import math

import pytest

from dsmctl.fileio import atomic_path, write_rows, write_text


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "summary.json"
    write_text(path, "old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("interrupted")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_rows_as_csv_and_jsonl(tmp_path):
    rows = [{"index": 0, "bits_per_dim": 4.5}, {"index": 1, "bits_per_dim": math.nan}]
    write_rows(tmp_path / "a.csv", rows)
    assert (tmp_path / "a.csv").read_text().splitlines() == ["index,bits_per_dim", "0,4.5", "1,nan"]
    write_rows(tmp_path / "a.jsonl", rows)
    back = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert back == [{"index": 0, "bits_per_dim": 4.5}, {"index": 1, "bits_per_dim": None}]


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"),
                                   RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                                                "message: \"No space left on device\" })"),
                                   OSError(30, "Read-only file system")])
def test_a_failed_write_is_one_line_naming_the_path_and_keeps_the_old_file(error, tmp_path):
    from dsmctl.fileio import WriteError

    path = tmp_path / "model.safetensors"
    write_text(path, "old\n")
    with pytest.raises(WriteError, match=f"(no space left on device|read-only file system) writing {path}") as e:
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise error
    assert "\n" not in str(e.value)
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_other_errors_pass_through_unchanged(tmp_path):
    with pytest.raises(KeyError):
        with atomic_path(tmp_path / "x.json"):
            raise KeyError("a bug, not a disk")


def test_stale_temporaries_of_dead_processes_are_removed_live_ones_kept(tmp_path):
    import os

    from dsmctl.fileio import clean_stale_temporaries

    dead, live = 999999999, os.getpid()
    names = [f".model.safetensors.tmp-{dead}.safetensors", f".latest.tmp-{dead}", f".a.json.tmp-{live}.json",
             "model.safetensors", ".hidden", "tmp-123"]
    for n in names:
        (tmp_path / n).write_text("x")
    removed = clean_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted(names[:2])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[2:])


def test_permission_denied_reading_another_folder_is_not_called_a_failed_write(tmp_path):
    from dsmctl.fileio import disk_errors

    with pytest.raises(PermissionError):
        with disk_errors(tmp_path / "out" / "x.npy"):
            raise PermissionError(13, "Permission denied", "/somewhere/else/source.png")
