"""Files that are never torn: everything dsmctl writes goes to a temporary sibling, is flushed to disk and
renamed into place, so a reader (or an interrupted run) sees the old file or the new one, never half of one."""
import csv
import json
import math
import os
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path):
    """Yields a temporary sibling of `path` to write; on success it is fsynced and renamed onto `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")  # keep the suffix: savefig reads it
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path, text):
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2) + "\n")


def write_rows(path, rows):
    """Rows of dicts as CSV, or as JSONL when the name ends in .jsonl (NaN written as null there)."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        if path.suffix == ".jsonl":
            for r in rows:
                f.write(json.dumps({k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()})
                        + "\n")
        elif rows:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


def fsync_dir(path):
    """Make a rename inside `path` durable (a no-op where directories cannot be opened, e.g. some filesystems)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
