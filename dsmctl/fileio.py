"""Files that are never torn: everything dsmctl writes goes to a temporary sibling, is flushed to disk and
renamed into place, so a reader (or an interrupted run) sees the old file or the new one, never half of one."""
import csv
import errno
import json
import math
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

# What a failed write means for the user, by errno (also matched in the text of non-OSError exceptions:
# safetensors raises SafetensorError("... No space left on device (os error 28)"), torch.save RuntimeError).
DISK_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
               errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
               errno.EPERM: "permission denied", errno.EFBIG: "file too large"}
DISK_TEXT = [(re.compile(p, re.I), why) for p, why in (
    (r"no space left|os error 28", "no space left on device"), (r"quota", "disk quota exceeded"),
    (r"read-only file system|os error 30", "read-only file system"),
    (r"permission denied|os error 13", "permission denied"))]
TEMP_NAME = re.compile(r"^\..+\.tmp-(\d+)(\..*)?$")  # .NAME.tmp-PID[.suffix], written by atomic_path


class WriteError(ValueError):
    """A write that failed for a reason the user can fix (full disk, read-only place); one line naming the path.
    `reason`: the short cause alone ("no space left on device"), for callers that name a larger unit."""

    def __init__(self, message, reason=None):
        super().__init__(message)
        self.reason = reason or message


def disk_reason(e, path=None):
    """A short reason if `e` is a failed write the user can act on (full disk, read-only, permissions), else None.

    torch.save reports a full disk as a RuntimeError ("unexpected pos", "file write failed") without an errno:
    that is called a full disk when the filesystem of `path` has (almost) no room left."""
    if isinstance(e, OSError) and e.errno in DISK_ERRNOS:
        if e.errno in (errno.EACCES, errno.EPERM) and e.filename and path is not None and not _within(
                e.filename, Path(path).parent):
            return None  # a file that could not be *read* elsewhere (a source): not a failed write
        return DISK_ERRNOS[e.errno]
    if not isinstance(e, (OSError, RuntimeError)) and type(e).__name__ != "SafetensorError":
        return None
    text = str(e)
    for pattern, why in DISK_TEXT:
        if pattern.search(text):
            return why
    if path is not None and re.search(r"unexpected pos|write failed|file write", text):
        try:
            if shutil.disk_usage(existing_parent(path)).free < (1 << 20):
                return "no space left on device"
        except OSError:
            pass
        return "write failed"
    return None


def _within(name, folder):
    try:
        return os.path.commonpath([os.path.abspath(name), os.path.abspath(folder)]) == os.path.abspath(folder)
    except (TypeError, ValueError):
        return False


def existing_parent(path):
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


@contextmanager
def disk_errors(path, note=""):
    """Turn a failed write inside the block into WriteError("REASON writing PATH NOTE"); others pass through."""
    try:
        yield
    except WriteError:
        raise
    except Exception as e:
        why = disk_reason(e, path)
        if why is None:
            raise
        raise WriteError(f"{why} writing {path}{' ' + note if note else ''}", why) from None


@contextmanager
def atomic_path(path):
    """Yields a temporary sibling of `path` to write; on success it is fsynced and renamed onto `path`.

    A full disk or a read-only place ends in WriteError naming `path` (the previous file is intact)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")  # keep the suffix: savefig reads it
    try:
        with disk_errors(path, "(the previous file, if any, is intact)"):
            yield tmp
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def pid_alive(pid):
    """Whether process `pid` exists on this machine (a process of another user counts as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process; a number no process can have
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def clean_stale_temporaries(folder):
    """Remove the .NAME.tmp-PID[.suffix] files that atomic_path left when process PID was killed mid-write
    (only where PID is no longer alive: a live writer's temporary is never touched); returns their names.

    Only for folders written by one machine at a time: a PID is only meaningful on the machine that owns it."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for p in entries:
        m = TEMP_NAME.match(p.name)
        if not m or pid_alive(int(m.group(1))):
            continue
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p.name)
        except OSError:
            pass
    return removed


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
