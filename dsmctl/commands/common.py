"""What every command shares: the stderr console, UsageError, option checks and rendering (text on stderr,
--json on stdout). The option checks run before any work or any file is written."""
import json
import math
import sys

from rich.console import Console

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


def need_choice(value, option, choices):
    if value not in choices:
        raise UsageError(f"{option} {value!r}: expected one of {', '.join(choices)}")
    return value


def check_writable(path, option, kind="directory", suffixes=None, inputs=()):
    """Refuse, before any work, an output place that cannot or must not be written: `path` is a directory to
    create or fill (kind "directory") or a file to write (kind "file", ending in one of `suffixes`, never one of
    `inputs`); the rules are outputs.py's, shared by every command."""
    from ..outputs import TABLE_SUFFIXES, check_dir, check_file

    if kind == "directory":
        return check_dir(path, option)
    return check_file(path, option, suffixes or TABLE_SUFFIXES, inputs)


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
