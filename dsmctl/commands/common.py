"""What every command shares: the stderr console, UsageError, option checks and rendering (text on stderr,
--json on stdout). The option checks run before any work or any file is written."""
import json
import math
import sys

from rich.console import Console

from ..options import UsageError, need_choice, need_float, need_int, need_t  # noqa: F401  (the commands' option checks)

err = Console(stderr=True, highlight=False, emoji=False, markup=False, soft_wrap=True)


def check_writable(path, option, kind="directory", suffixes=None, inputs=()):
    """Refuse, before any work, an output place that cannot or must not be written: `path` is a directory to
    create or fill (kind "directory") or a file to write (kind "file", ending in one of `suffixes`, never one of
    `inputs`); the rules are outputs.py's, shared by every command."""
    from ..outputs import TABLE_SUFFIXES, OutputError, check_dir, check_file

    try:
        if kind == "directory":
            return check_dir(path, option)
        return check_file(path, option, suffixes or TABLE_SUFFIXES, inputs)
    except OutputError as e:
        raise UsageError(str(e)) from None


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
