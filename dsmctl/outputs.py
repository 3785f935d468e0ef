"""Where a command may write: one check for every output option, run before any work, and one writer per
directory (a lock held for the life of the process).

An output file is refused (OutputError, one line naming the option) when its name ends in "/" (a directory),
has a suffix the command does not write, names something that is not a regular file (a link, a device, a
FIFO, a socket, a directory), is one of the command's own inputs, is a file of a run directory (its recipe,
metrics, models, checkpoints...) or lies in a prepared data or checkpoint directory. docs/training.md,
"What dsmctl guarantees about outputs", is the user's statement of these rules.
"""
import os
from pathlib import Path

from .fileio import LockBusy, hold_lock, not_regular, owner_text

TABLE_SUFFIXES = (".csv", ".jsonl")
IMAGE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg", ".tif", ".tiff", ".eps", ".ps")
LOCK_NAME = ".dsmctl.lock"  # inside a run / output directory while a writer holds it
# What `dsmctl train` keeps in a run directory (engine/train_state.py, trainer.py, data/subsets.py).
RUN_FILES = ("recipe.yaml", "command.txt", "versions.json", "metrics.jsonl", "summary.json", "subset_indices.npy",
             "checkpoints", LOCK_NAME)


class OutputError(ValueError):
    """An output option that would write where it must not; the message names the option and the path."""


def _or_list(suffixes):
    return ", ".join(suffixes[:-1]) + " or " + suffixes[-1] if len(suffixes) > 1 else suffixes[0]


def is_run_dir(folder):
    folder = Path(folder)
    return (folder / "recipe.yaml").is_file() and any(
        (folder / n).exists() for n in ("metrics.jsonl", "checkpoints", "model.safetensors"))


def protected_dir(folder):
    """Why nothing may be written into `folder` (a prepared data directory, a checkpoint, a run's checkpoints
    folder), or None."""
    folder = Path(folder)
    if (folder / "manifest.json").is_file():
        return "a prepared data or checkpoint directory (it has a manifest.json)"
    if folder.name == "checkpoints" and is_run_dir(folder.parent):
        return "the checkpoints folder of a run directory"
    return None


def check_file(raw, option, suffixes=TABLE_SUFFIXES, inputs=()):
    """The output file `raw` (the option's text as given) checked before any work; returns it as a Path.
    `inputs`: the paths the command reads (a model file or directory...): never written over."""
    text = os.fspath(raw)
    expected = f"expected a file name ending in {_or_list(suffixes)}"
    if not text or text.endswith(("/", os.sep)) or Path(text).name in ("", ".", ".."):
        raise OutputError(f"{option} {text!r}: names a directory; {expected}")
    path = Path(text)
    what = not_regular(path)
    if what is not None:
        raise OutputError(f"{option} {path}: is {what}; {expected} (dsmctl never replaces a link, a device, a "
                          f"FIFO, a socket or a directory)")
    if path.suffix.lower() not in suffixes:
        raise OutputError(f"{option} {path}: {'suffix ' + path.suffix if path.suffix else 'no suffix'} is not "
                          f"written; {expected}")
    for source in inputs:
        if source is not None and path.exists() and Path(source).exists() and _same(path, source):
            raise OutputError(f"{option} {path}: is this command's input; choose another output name")
    folder = path.parent
    if not folder.is_dir():  # a file's folder is not created for it
        raise OutputError(f"{option} {path}: directory {folder} does not exist")
    if is_run_dir(folder) and (path.name in RUN_FILES or path.suffix.lower() == ".safetensors"):
        raise OutputError(f"{option} {path}: is a file of the run directory {folder}; choose another output name")
    why = protected_dir(folder)
    if why:
        raise OutputError(f"{option} {path}: {folder} is {why}; choose another place")
    _writable(path, option, "file")
    return path


def check_dir(raw, option):
    """The output directory `raw` (to create or fill) checked before any work; returns it as a Path."""
    path = Path(os.fspath(raw))
    if path.exists() and not path.is_dir():
        raise OutputError(f"{option} {path}: is {not_regular(path) or 'a file'}; expected a directory")
    why = protected_dir(path)
    if why:
        raise OutputError(f"{option} {path}: is {why}; choose another directory")
    _writable(path, option, "directory")
    return path


def _same(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _writable(path, option, kind):
    folder = path if kind == "directory" else path.parent
    probe = folder
    while not probe.exists():
        if probe.is_symlink() or probe.parent == probe:
            raise OutputError(f"{option} {path}: {probe} cannot be created; expected a writable {kind}")
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"{option} {path}: {probe} is a file, so {folder} cannot be created; expected a writable "
                          f"{kind}")
    if not os.access(probe, os.W_OK | os.X_OK) or (kind == "file" and path.exists() and not os.access(path, os.W_OK)):
        where = "" if probe == path else f" ({probe} is read-only for this user)"
        raise OutputError(f"{option} {path}: not writable{where}; expected a writable {kind}")


class DirLock:
    """One writer per output directory: `DirLock(folder, what).acquire()` creates `folder` if needed and takes
    the lock file inside it (.dsmctl.lock) for the life of the process or until .release(), which removes the
    file; the kernel drops the lock when the process ends, kill -9 included (a file left then is harmless). A second writer gets OutputError naming the holder (pid, command, start time).

    shared=True: cooperating writers of disjoint files (sample shards) hold it together; an exclusive writer
    is refused while any of them runs, and they while it runs."""

    def __init__(self, folder, what="--out", shared=False):
        self.folder, self.what, self.shared = Path(folder), what, shared
        self.lock, self.created = None, False

    def acquire(self):
        try:
            self.folder.parent.mkdir(parents=True, exist_ok=True)
            self.folder.mkdir()
            self.created = True
        except FileExistsError:
            pass
        try:
            self.lock = hold_lock(self.folder / LOCK_NAME, shared=self.shared, owner=owner_text())
        except LockBusy as e:
            held = f" ({e.owner})" if e.owner else ""
            raise OutputError(f"{self.what} {self.folder}: another dsmctl process is writing this directory"
                              f"{held}; wait for it to finish or choose another directory") from None
        except BaseException:
            self.release(remove_if_empty=True)
            raise
        return self

    def release(self, remove_if_empty=False):
        """Drop the lock and remove its file (a shared lock leaves the file to the other holders); with
        remove_if_empty, a folder this lock created and nothing else wrote is removed too."""
        if self.lock is not None:
            self.lock.release(remove=not self.shared)
            self.lock = None
        if remove_if_empty and self.created:
            try:
                if not any(p.name != LOCK_NAME for p in self.folder.iterdir()):
                    (self.folder / LOCK_NAME).unlink(missing_ok=True)
                    self.folder.rmdir()
            except OSError:
                pass

    def __enter__(self):
        return self.acquire()

    def __exit__(self, kind, value, tb):
        self.release(remove_if_empty=kind is not None)
        return False
