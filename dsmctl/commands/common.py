"""What every command shares: the stderr console, UsageError, option checks and rendering (text on stderr,
--json on stdout). The option checks run before any work or any file is written."""
import json
import math
import os
import sys
from pathlib import Path

from rich.console import Console

from ..recipe_yaml import show

err = Console(stderr=True, highlight=False, emoji=False, markup=False, soft_wrap=True)


class UsageError(ValueError):
    """Bad input found by the CLI itself."""


def need_int(value, option, lo=1, hi=None, why=""):
    """An integer option in [lo, hi] (None: no bound); `why` explains the upper bound."""
    if value is None:
        return None
    if value < lo or (hi is not None and value > hi):
        expected = f"an integer >= {lo}" if hi is None else f"an integer in {lo}..{hi:,}"
        raise UsageError(f"{option} {value}: expected {expected}{why}")
    return value


def need_float(value, option, lo=None, hi=None, lo_open=True, hi_open=False, what="a number"):
    """A finite float option; lo/hi bounds, open (excluded) or closed."""
    if value is None:
        return None
    ok = math.isfinite(value)
    ok = ok and (lo is None or (value > lo if lo_open else value >= lo))
    ok = ok and (hi is None or (value < hi if hi_open else value <= hi))
    if not ok:
        if lo is not None and hi is not None:
            rng = f" in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        elif lo is not None:
            rng = f" {'>' if lo_open else '>='} {lo:g}"
        elif hi is not None:
            rng = f" {'<' if hi_open else '<='} {hi:g}"
        else:
            rng = ""
        raise UsageError(f"{option} {value}: expected a finite {what}{rng}")
    return value


def need_t(value, option, positive=False):
    """A noise-variance option: units.check_t (the one check of a noise level, shared with the API and recipes)."""
    from ..units import check_t

    if value is None:
        return None
    try:
        return check_t(value, f"{option} {value}", positive)
    except ValueError as e:
        raise UsageError(str(e)) from None


def need_choice(value, option, choices):
    if value not in choices:
        raise UsageError(f"{option} {show(value)}: expected one of {', '.join(choices)}")
    return value


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
