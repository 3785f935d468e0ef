"""dsmctl command line: the Typer app, its seven commands (dsmctl/commands/) and the one error boundary.

Error classes and exit codes (docs/training.md, "Errors and exit codes"):
  bad input (ValueError and its subclasses: UsageError, RecipeError, DataError, CheckpointError, ...),
  a path that cannot be read or written, a full disk (OSError), out of memory at set-up, a device that
  does not exist: one line "error: ..." naming the culprit, exit 2 (or the error's own `exit_code`, e.g. 3
  for a diverged training);
  anything else is a bug: one line "error: internal error: ..." and exit 1; with `dsmctl --debug` or
  DSMCTL_DEBUG=1 the traceback is printed as well.
"""
import errno
import os
import re
import sys
import traceback

import typer

from .commands import dimension, eval_nll, generalize, prepare, sample, score, train
from .commands.common import UsageError, emit_json, err  # noqa: F401  (the commands' shared helpers)
from .recipe_yaml import shorten

EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 1

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Learn normalized image densities with dual score matching.")
app.command()(prepare.prepare)
app.command()(train.train)
app.command("eval-nll")(eval_nll.eval_nll)
app.command()(generalize.generalize)
app.command()(dimension.dimension)
app.command()(sample.sample)
app.command()(score.score)

_state = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="On an error, also print the Python traceback "
                                     "(same as DSMCTL_DEBUG=1).")):
    """Learn normalized image densities with dual score matching."""
    _state["debug"] = debug


def debug_enabled():
    return _state["debug"] or os.environ.get("DSMCTL_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


LONG_WORD = 400  # characters: a longer word in a message is an echoed value (a 20,000-value list), shortened


def one_line(text):
    """Messages are printed on one line whatever they contain (YAML marks, nested errors), and never echo a huge
    value whole: any word longer than LONG_WORD is shortened (recipe_yaml.shorten)."""
    parts = [p.strip() for p in str(text).splitlines() if p.strip()]
    line = "; ".join(parts) or "(no message)"
    return re.sub(r"\S{%d,}" % (LONG_WORD + 1), lambda m: shorten(m.group(0), 120), line)


def os_error_message(e):
    """An OSError as 'PATH: what went wrong; what is expected'."""
    name = e.filename if e.filename is not None else None
    if getattr(e, "filename2", None):
        name = f"{name} -> {e.filename2}"
    what = e.strerror or str(e)
    if e.errno == errno.ENOSPC:
        tail = "no space left on device; free some space (or choose another place) and rerun"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        tail = f"{what.lower()}; expected a place this user can read and write (not writable)"
    elif e.errno == errno.ENOENT:
        tail = "no such file or directory"
    else:
        tail = what
    return f"{name}: {tail}" if name is not None else f"{tail} ({e})"


def classify(e):
    """(exit code, message) of an exception that escaped a command; exit 1 means a bug."""
    if hasattr(e, "format_message") and isinstance(getattr(e, "exit_code", None), int):
        # Click's own usage errors (unknown option or command, an int that is not one, a missing option)
        ctx = getattr(e, "ctx", None)
        hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        return e.exit_code, one_line(e.format_message()) + hint
    code = getattr(e, "exit_code", None)
    if isinstance(code, int) and isinstance(e, (ValueError, RuntimeError)):  # TrainError, DivergedError, ...
        return code, one_line(e)
    if isinstance(e, ValueError):  # UsageError, RecipeError, DataError, CheckpointError, ShapeError, DeviceError
        return EXIT_BAD_INPUT, one_line(e)
    if isinstance(e, OSError):
        return EXIT_BAD_INPUT, one_line(os_error_message(e))
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError
        detail = one_line(e).split(";")[0] if str(e) else ""
        return EXIT_BAD_INPUT, ("out of memory" + (f" ({detail})" if detail else "")
                                + "; lower the batch size, the number of images or the model size")
    return EXIT_INTERNAL, (f"internal error: {type(e).__name__}: {one_line(e)}; this is a bug in dsmctl: rerun "
                           f"with `dsmctl --debug ...` or DSMCTL_DEBUG=1 for the traceback, and report it")


def main():
    _state["debug"] = False
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        err.print("interrupted")
        code = 130
    except Exception as e:  # noqa: BLE001  (the one boundary: every exception becomes one line)
        if type(e).__name__ == "NoArgsIsHelpError":  # `dsmctl` or `dsmctl CMD` alone: the help, exit 2 as before
            sys.stdout.write(e.ctx.get_help() + "\n")
            sys.exit(EXIT_BAD_INPUT)
        code, message = classify(e)
        if debug_enabled():
            traceback.print_exc()
        err.print(f"error: {message}", markup=False, style="red", soft_wrap=True)
    sys.exit(code if isinstance(code, int) else 0)
