"""`dsmctl generalize`: train on disjoint subsets and compare log-probabilities (paper Fig. 2)."""
from pathlib import Path
from typing import List, Optional

import typer

from .common import UsageError, check_writable, emit_json, err, need_float, need_int, need_t


def generalize(
    recipe: Optional[Path] = typer.Argument(None, help="Recipe YAML to train on each subset (omit with --models)."),
    n: str = typer.Option("", "--n", help="Comma-separated subset sizes N, e.g. 10,100,1000."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Directory for the run dirs, tables and plots."),
    set_: List[str] = typer.Option([], "--set", help="Override a recipe value (repeatable), e.g. --set train.steps=800."),
    steps: Optional[int] = typer.Option(None, help="Training steps for every model (overrides train.steps)."),
    split: str = typer.Option("first-last", help="first-last (first N vs last N) | random:SEED (disjoint random)."),
    models: List[Path] = typer.Option([], "--models", help="Two existing checkpoints to compare instead of training "
                                      "(give --models twice)."),
    n_eval: int = typer.Option(500, help="Images evaluated per set (each subset and the test split), >= 1; a set "
                               "with fewer images is evaluated whole."),
    threshold: float = typer.Option(1.0, "--memorization-threshold", help="dB/dim: a model memorizes when its own "
                                    "training images' mean log p exceeds the test images' by more than this."),
    t: Optional[float] = typer.Option(None, help="Noise variance of the evaluated images (default: the recipe's "
                                      "noise.t_min, the lowest trained level)."),
    batch_size: Optional[int] = typer.Option(None),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    plot: bool = typer.Option(True, help="Write scatter.png (Fig. 2) and summary.png into --out."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No training progress output."),
):
    """Train two models on disjoint subsets and compare their log-probabilities (paper Fig. 2).

    Resumable: finished trainings in OUT are reused, unfinished ones resume.

    Examples:
      dsmctl generalize recipes/quickstart.yaml --n 10,100,1000 --steps 800 --out runs/gen
      dsmctl generalize --models runs/gen/N100-a --models runs/gen/N100-b --out runs/gen-100
    """
    from contextlib import nullcontext

    from ..analysis import generalization as G
    from ..device import resolve_device
    from ..outputs import DirLock

    need_t(t, "--t")
    need_float(threshold, "--memorization-threshold", what="threshold in dB/dim")
    need_int(n_eval, "--n-eval", 1)
    need_int(batch_size, "--batch-size", 1, 10 ** 7)
    try:
        G.subset_specs(1, split)  # --split, before anything is trained
    except ValueError as e:
        raise UsageError(str(e)) from None
    resolve_device(device)  # refuses a device this machine does not have, before any work
    if out is not None:
        check_writable(out, "--out")
    if models:
        if len(models) != 2 or recipe is not None:
            raise UsageError("--models takes exactly two checkpoints (give it twice) and no recipe")
        with DirLock(out, "--out") if out is not None else nullcontext():
            res = G.run_pair(models[0], models[1], n_eval, threshold, batch_size or 256, resolve_device(device), out,
                             plot, t or 0.0)
    else:
        from ..recipe import load_recipe

        if recipe is None or out is None or not n:
            raise UsageError("generalize: give a RECIPE, --n N1,N2,... and --out DIR (or --models A --models B)")
        try:
            ns = [int(v) for v in n.split(",") if v.strip()]
        except ValueError:
            ns = []
        if not ns or min(ns) < 1:
            raise UsageError(f"--n {n!r}: expected comma-separated subset sizes >= 1, e.g. 10,100,1000")
        twice = sorted({v for v in ns if ns.count(v) > 1})
        if twice:
            raise UsageError(f"--n {n!r}: {', '.join(map(str, twice))} given twice; expected distinct subset sizes")
        overrides = list(set_) + ([f"train.steps={steps}"] if steps else [])
        r = load_recipe(recipe, overrides)
        if r.data.subset:
            raise UsageError(f"{recipe}: data.subset is set ({r.data.subset}); generalize chooses the subsets itself")
        with DirLock(out, "--out"):  # one writer of OUT (each run dir inside it is locked by its training too)
            res = G.run(r, ns, out, split, n_eval, threshold, batch_size, resolve_device(device), progress=not quiet,
                        log=lambda text: err.print(text), plot=plot, t=t)
    err.print(G.summary_text(res["rows"]))
    if res.get("protocol"):
        err.print(f"protocol: {res['protocol']}")
    if res.get("out"):
        err.print(f"wrote {res['out']}/generalization.json, generalization.txt, per_image.csv"
                  + (", scatter.png, summary.png" if plot else ""))
    if as_json:
        emit_json(res)
