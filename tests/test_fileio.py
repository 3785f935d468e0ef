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
