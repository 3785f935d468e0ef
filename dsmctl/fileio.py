"""Files that are never torn: everything dsmctl writes goes to a temporary sibling, is flushed to disk and
renamed into place, so a reader (or an interrupted run) sees the old file or the new one, never half of one.
Only a regular file (or nothing) is ever replaced: a link, a device, a FIFO or a socket at the path is refused.
Also the one lock helper (`hold_lock`): one writer per directory, released by the kernel when the process dies."""
import csv
import errno
import fcntl
import json
import math
import os
import re
import shutil
import stat
import sys
import time
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


def not_regular(path):
    """What stands at `path` if it is something a write must not replace ("a symbolic link", "a FIFO (named
    pipe)", "a character device", ...), else None (nothing there, or a regular file). A directory is "a directory"."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return None  # unreadable: the write itself reports it
    if stat.S_ISREG(mode):
        return None
    for test, what in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return what
    return "not a regular file"


@contextmanager
def atomic_path(path):
    """Yields a temporary sibling of `path` to write; on success it is fsynced and renamed onto `path`.

    A full disk or a read-only place ends in WriteError naming `path` (the previous file is intact). Only a
    regular file is replaced: a link, device, FIFO, socket or directory at `path` is refused (WriteError) before
    anything is written, and again just before the rename."""
    path = Path(path)

    def refuse_special():
        what = not_regular(path)
        if what is not None:
            raise WriteError(f"{path}: is {what}; dsmctl writes only regular files and never replaces "
                             f"{'links or special files' if what != 'a directory' else 'a directory'}",
                             "not a regular file")

    refuse_special()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")  # keep the suffix: savefig reads it
    try:
        with disk_errors(path, "(the previous file, if any, is intact)"):
            yield tmp
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            refuse_special()
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
        if path.suffix.lower() == ".jsonl":
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


# ---------------------------------------------------------------- one writer at a time

class LockBusy(Exception):
    """The lock is held by another process; `owner` is what that process wrote into the lock file ("" if
    nothing yet): e.g. 'pid 1234, `dsmctl train r.yaml --out runs/a`, since 2026-12-03 18:20:01'."""

    def __init__(self, path, owner):
        super().__init__(f"{path} is locked{f' by {owner}' if owner else ''}")
        self.path, self.owner = path, owner


def owner_text(command=None):
    """How a lock file names its holder: pid, command line, start time."""
    command = command or " ".join(["dsmctl"] + sys.argv[1:])
    if len(command) > 200:
        command = command[:197] + "..."
    return f"pid {os.getpid()}, `{command}`, since {time.strftime('%Y-%m-%d %H:%M:%S')}"


def hold_lock(path, shared=False, owner=None):
    """Take an flock on the file `path` (created if missing) without waiting; returns the open file, which holds
    the lock until .release() or the end of the process (the kernel drops it on any exit, kill -9 included).

    Exclusive (the default): the holder's pid, command line and start time are written into the file, for the
    refusal the next process gets. Shared: any number of shared holders, no exclusive one. Raises LockBusy if the
    lock is held, OSError if the file cannot be created. A lock file removed by .release(remove=True) while
    we waited is detected (the file locked must still be the one at `path`) and the lock taken again."""
    path = Path(path)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), 0o644)
        f = os.fdopen(fd, "r+")
        try:
            fcntl.flock(f, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError:
            try:
                held_by = f.read(1000).strip()
            except OSError:
                held_by = ""
            f.close()
            raise LockBusy(path, held_by) from None
        try:
            same = os.path.samestat(os.fstat(f.fileno()), os.stat(path))
        except FileNotFoundError:
            same = False
        if not same:
            f.close()
            continue
        if not shared:
            f.seek(0)
            f.truncate()
            f.write((owner or owner_text()) + "\n")
            f.flush()
        return HeldLock(path, f)


class HeldLock:
    """A lock taken by hold_lock: its path and the open file that holds it."""

    def __init__(self, path, file):
        self.path, self.file = Path(path), file

    def release(self, remove=False):
        """Drop the lock; `remove` deletes the lock file first (while still holding it)."""
        if self.file.closed:
            return
        if remove:
            try:
                os.unlink(self.path)
            except OSError:
                pass
        try:
            fcntl.flock(self.file, fcntl.LOCK_UN)
        finally:
            self.file.close()
