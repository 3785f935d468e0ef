"""What every command shares: the stderr console, UsageError, option checks and rendering (text on stderr,
--json on stdout). The option checks run before any work or any file is written."""
import json
import math
import os
import sys
from pathlib import Path

from rich.console import Console

from ..options import UsageError, need_choice, need_float, need_int, need_t  # noqa: F401  (the commands' option checks)

err = Console(stderr=True, highlight=False, emoji=False, markup=False, soft_wrap=True)


def check_writable(path, option, kind="directory"):
    """Refuse, before any work, an output place that cannot be written: `path` is a directory to create or
    fill (kind "directory") or a file to write (kind "file"); the nearest existing folder must be writable."""
    path = Path(path)
    if path.exists() and (path.is_dir() != (kind == "directory")):
        raise UsageError(f"{option} {path}: is {'a file' if kind == 'directory' else 'a directory'}; "
                         f"expected a {kind}")
    folder = path if kind == "directory" else path.parent
    probe = folder
    while not probe.exists():
        if probe.is_symlink() or probe.parent == probe:
            raise UsageError(f"{option} {path}: {probe} cannot be created; expected a writable {kind}")
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"{option} {path}: {probe} is a file, so {folder} cannot be created; expected a writable "
                         f"{kind}")
    if not os.access(probe, os.W_OK | os.X_OK):
        where = "" if probe == path else f" ({probe} is read-only for this user)"
        raise UsageError(f"{option} {path}: not writable{where}; expected a writable {kind}")
    return path


def emit_json(obj):
    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    sys.stdout.write(json.dumps(clean(obj), indent=2) + "\n")
    sys.stdout.flush()


def render(lines):
    """Print a module's [(text, style or None)] report on stderr."""
    for text, style in lines:
        err.print(text, style=style)
