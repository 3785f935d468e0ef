"""dsmctl command line: the Typer app, its six commands (dsmctl/commands/) and the shared error handling."""
import sys

import typer

from .commands import dimension, eval_nll, generalize, prepare, sample, train
from .commands.common import UsageError, emit_json, err  # noqa: F401  (the commands' shared helpers)

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Learn normalized image densities with dual score matching.")
app.command()(prepare.prepare)
app.command()(train.train)
app.command("eval-nll")(eval_nll.eval_nll)
app.command()(generalize.generalize)
app.command()(dimension.dimension)
app.command()(sample.sample)


def main():
    from .data import DataError
    from .engine.trainer import TrainError
    from .nn.build import ShapeError
    from .nn.model_file import CheckpointError
    from .recipe import RecipeError

    try:
        app()
    except (UsageError, RecipeError, DataError, CheckpointError, ShapeError, TrainError, ValueError) as e:
        err.print(f"error: {e}", markup=False, style="red", soft_wrap=True)
        sys.exit(getattr(e, "exit_code", 2))
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
