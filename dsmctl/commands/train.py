"""`dsmctl train`: train a model from a recipe (or --dry-run: describe it)."""
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .common import UsageError, check_writable, emit_json, err


def train(
    recipe: Path = typer.Argument(..., help="Recipe YAML (see recipes/)."),
    set_: List[str] = typer.Option([], "--set", help="Override a recipe value: --set optim.lr=1e-4 (repeatable)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory (default runs/RECIPE-HASH)."),
    resume: str = typer.Option("auto", help="auto (newest complete checkpoint of the run dir, else fresh) | never | "
                                            "PATH (a checkpoint directory, verified, no fallback)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved recipe and parameter count, then exit."),
    shape: Optional[str] = typer.Option(None, help="With --dry-run: the example shape C,H,W (or D) to assume "
                                        "instead of opening the data, e.g. 3,64,64 before ImageNet64 is prepared."),
    verify_data: str = typer.Option("quick", "--verify-data", help="Re-check a prepared data.source before training: "
                                    "quick (file sizes + a sampled hash, reads <= 4 MiB per file) | full (the whole "
                                    "sha256, as prepare --verify: reads every byte) | skip."),
    as_json: bool = typer.Option(False, "--json", help="Print the run summary as JSON on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
):
    """Train an energy (or denoiser) model with dual score matching.

    Examples:
      dsmctl train recipes/quickstart.yaml
      dsmctl train recipes/gsm1000.yaml --set loss.mode=single --out runs/gsm-single
      accelerate launch -m dsmctl train recipes/imagenet64.yaml
      torchrun --standalone --nproc_per_node 8 -m dsmctl train recipes/imagenet64.yaml --out runs/in64

    Exit codes: 0 done, 2 bad input, 3 too many non-finite steps, 130/143 stopped by SIGINT/SIGTERM
    after saving a checkpoint (continue with --resume auto). See docs/training.md.
    """
    from ..data import VERIFY_MODES
    from ..recipe import load_recipe

    if verify_data not in VERIFY_MODES:
        raise UsageError(f"--verify-data {verify_data!r}: expected one of {', '.join(VERIFY_MODES)}")
    r = load_recipe(recipe, set_)
    run_dir = out or Path("runs") / f"{recipe.stem}-{r.hash()}"
    if dry_run:
        from ..engine.dryrun import describe

        try:
            dims = tuple(int(v) for v in shape.split(",")) if shape else None
        except ValueError:
            dims = ()
        if dims is not None and (not 1 <= len(dims) <= 3 or min(dims) < 1):
            raise UsageError(f"--shape {shape!r}: expected 1 to 3 comma-separated positive integers, e.g. 3,64,64")
        info = describe(r, dims)
        err.print(r.to_yaml().rstrip())
        err.print(f"# recipe hash {r.hash()}; {info['parameters']:,} parameters; examples of shape {tuple(info['shape'])}; "
                  f"global batch {r.train.batch_size} = {info['world_size']} process(es) x {info['batch_per_process']}; "
                  f"~{info['memory_gib']:.2f} GiB estimated training memory per process; run dir {run_dir}")
        if as_json:
            emit_json({"recipe": r.to_dict(), "hash": r.hash(), **info, "run_dir": str(run_dir)})
        return
    check_writable(run_dir, "--out" if out else "run directory")
    from ..engine.trainer import release_processes, train as run_training

    summary = run_training(r, run_dir, resume=resume, command=" ".join(["dsmctl"] + sys.argv[1:]), progress=not quiet,
                           verify_data=verify_data)
    release_processes()  # the command ends here on every rank: leave the process group before exiting
    if "stopped" in summary:  # SIGTERM/SIGINT: checkpoint saved at a step boundary (docs/training.md)
        if as_json and summary.get("rank", 0) == 0:
            emit_json(summary)
        raise typer.Exit(summary["stopped"]["exit_code"])
    if "model" in summary and summary.get("rank", 0) == 0:  # one report, whatever the number of processes
        err.print(f"[train] done: {summary['model']}")
        if as_json:
            emit_json(summary)
