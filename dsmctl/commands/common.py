"""What every command shares: the stderr console, UsageError, and rendering (text on stderr, --json on stdout)."""
import json
import math
import sys

from rich.console import Console

err = Console(stderr=True, highlight=False, emoji=False, markup=False, soft_wrap=True)


class UsageError(ValueError):
    """Bad input found by the CLI itself."""


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
