"""dsmctl command line: parse, call a module function, render (human text on stderr, --json on stdout)."""
import json
import math
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Learn normalized image densities with dual score matching.")
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


@app.command()
def prepare(
    source: str = typer.Argument(..., help="demo | synthetic[:gsm1000|:gaussian64] | owner/name (Hugging Face) | "
                                 "hf:DIR | imagenet-org:DIR | mnist:ROOT | fashion-mnist:ROOT | cifar10:ROOT | "
                                 "FILE.npy/.npz | image folder (see docs/data.md)"),
    out: Path = typer.Option(None, "--out", "-o", help="Prepared directory to write."),
    split: Optional[str] = typer.Option(None, help="Only these splits, comma-separated (e.g. train,validation)."),
    limit: Optional[int] = typer.Option(None, help="Keep the first N items of each split (quick subsets)."),
    grayscale: bool = typer.Option(False, help="Convert colour images to grey (ITU-R 601-2 luma, as PIL's 'L')."),
    size: Optional[int] = typer.Option(None, help="Make images SIZE x SIZE (how: --fit)."),
    fit: str = typer.Option("resize", help="With --size: resize (box-filter the short side, centre-crop) | "
                            "crop (centre crop) | pad (zero padding)."),
    holdout: float = typer.Option(0, help="Move the last N (or a fraction < 1) of a single-split source to 'test'."),
    layout: str = typer.Option("auto", help="Array layout of .npy/.npz images: auto | nchw | nhwc."),
    config: Optional[str] = typer.Option(None, help="Hugging Face dataset configuration name."),
    revision: Optional[str] = typer.Option(None, help="Hugging Face dataset revision (branch, tag or commit)."),
    image_column: Optional[str] = typer.Option(None, help="Hugging Face image column (default: detected)."),
    label_column: Optional[str] = typer.Option(None, help="Hugging Face label column (default: detected)."),
    variant: Optional[str] = typer.Option(None, help="Name the data set in the manifest, e.g. the Hub id a local "
                                          "copy came from (sradc/imagenet_resized_64x64: its sizes are then checked)."),
    param: List[str] = typer.Option([], "--param", help="Synthetic density parameter, e.g. --param d=64 "
                                    "--param variances=[1,4] --param n_train=5000 (repeatable)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing prepared directory made from another request."),
    verify: bool = typer.Option(False, "--verify", help="Recompute the fingerprint of an existing prepared SOURCE."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON on stdout."),
):
    """Turn a data source into a prepared directory (one uint8/float array per split + manifest.json).

    Writing is resumable (re-run the same command after an interruption) and atomic (the directory
    appears complete or not at all); the same command twice does nothing the second time.

    Examples:
      dsmctl prepare demo --out data/demo
      dsmctl prepare synthetic:gsm1000 --out data/gsm1000
      dsmctl prepare synthetic:gsm1000 --param d=100 --param variances=[1,4] --out data/gsm100
      dsmctl prepare imagenet-org:~/Imagenet64 --out data/imagenet64
      dsmctl prepare benjamin-paine/imagenet-1k-64x64 --split train,validation --out data/imagenet64-hf
      dsmctl prepare fashion-mnist:/usr/share/datasets/fashion-mnist --out data/fashion-mnist
      dsmctl prepare images/ --size 64 --holdout 0.1 --out data/mine
      dsmctl prepare --verify data/imagenet64
    """
    from . import data
    from .data.progress import PrepareProgress

    progress = PrepareProgress(enabled=not quiet)
    try:
        if verify:
            ok, report = data.verify(source, progress=progress)
            progress.close()
            for item, (want, got) in report.items():
                err.print(f"{source}:{item}: {'ok' if want == got else 'MISMATCH'} sha256 {got[:16]}"
                          + ("" if want == got else f" (manifest says {str(want)[:16]})"))
            if as_json:
                emit_json({"ok": ok, "splits": {k: {"expected": a, "actual": b} for k, (a, b) in report.items()}})
            raise typer.Exit(0 if ok else 1)
        if out is None:
            raise UsageError("prepare: --out DIR is required")
        if layout not in ("auto", "nchw", "nhwc"):
            raise UsageError(f"--layout {layout!r}: expected auto, nchw or nhwc")
        if fit not in ("resize", "crop", "pad"):
            raise UsageError(f"--fit {fit!r}: expected resize, crop or pad")
        holdout = int(holdout) if holdout >= 1 else holdout
        splits = [s.strip() for s in split.split(",") if s.strip()] if split else None
        synthetic_spec = None
        if param:
            if not source.startswith("synthetic"):
                raise UsageError(f"--param applies to synthetic sources, not {source!r}")
            from .data.sources import synthetic_spec_of
            from .recipe import parse_override

            synthetic_spec = {**synthetic_spec_of(source), **dict(parse_override(p) for p in param)}
        manifest = data.prepare(source, out, force=force, progress=progress, synthetic_spec=synthetic_spec,
                                grayscale=grayscale, size=size, fit=fit,
                                holdout=holdout, layout=layout, splits=splits, limit=limit, config=config,
                                revision=revision, image_column=image_column, label_column=label_column,
                                variant=variant)
    finally:
        progress.close()
    if manifest.get("reused"):
        err.print(f"{out}: already prepared from the same source and options; nothing to do (--force to redo)")
    err.print(f"{out}: {manifest.get('variant')}; {manifest.get('transform', '')}")
    for name, s in manifest["splits"].items():
        err.print(f"{out}:{name}: {s['n']:,} x {tuple(s['shape'])} {s['dtype']}"
                  f"{' + labels' if s.get('labels') else ''}  sha256 {s['sha256'][:16]}")
    for w in manifest.get("warnings", []):
        err.print(f"warning: {w}", style="yellow")
    err.print(f"fingerprint {manifest['fingerprint']}")
    if as_json:
        emit_json(manifest)


@app.command()
def train(
    recipe: Path = typer.Argument(..., help="Recipe YAML (see recipes/)."),
    set_: List[str] = typer.Option([], "--set", help="Override a recipe value: --set optim.lr=1e-4 (repeatable)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory (default runs/RECIPE-HASH)."),
    resume: str = typer.Option("auto", help="auto (newest complete checkpoint of the run dir, else fresh) | never | "
                                            "PATH (a checkpoint directory, verified, no fallback)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved recipe and parameter count, then exit."),
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
    from .recipe import load_recipe

    r = load_recipe(recipe, set_)
    run_dir = out or Path("runs") / f"{recipe.stem}-{r.hash()}"
    if dry_run:
        from .engine.dryrun import describe

        info = describe(r)
        err.print(r.to_yaml().rstrip())
        err.print(f"# recipe hash {r.hash()}; {info['parameters']:,} parameters; examples of shape {tuple(info['shape'])}; "
                  f"global batch {r.train.batch_size} = {info['world_size']} process(es) x {info['batch_per_process']}; "
                  f"~{info['memory_gib']:.2f} GiB estimated training memory per process; run dir {run_dir}")
        if as_json:
            emit_json({"recipe": r.to_dict(), "hash": r.hash(), **info, "run_dir": str(run_dir)})
        return
    from .engine.trainer import train as run_training

    summary = run_training(r, run_dir, resume=resume, command=" ".join(["dsmctl"] + sys.argv[1:]), progress=not quiet)
    if "stopped" in summary:  # SIGTERM/SIGINT: checkpoint saved at a step boundary (docs/training.md)
        if as_json and summary.get("rank", 0) == 0:
            emit_json(summary)
        raise typer.Exit(summary["stopped"]["exit_code"])
    if "model" in summary and summary.get("rank", 0) == 0:  # one report, whatever the number of processes
        err.print(f"[train] done: {summary['model']}")
        if as_json:
            emit_json(summary)


@app.command("eval-nll")
def eval_nll(
    ckpt: Path = typer.Argument(..., help="Model file, checkpoint dir or run dir."),
    data: Optional[str] = typer.Option(None, help="Evaluation source (default: the model's own data source)."),
    split: Optional[str] = typer.Option(None, help="Split (default: the recipe's eval split)."),
    t: Optional[float] = typer.Option(None, help="Noise variance of the evaluated data (default: recipe, 0)."),
    psnr: Optional[float] = typer.Option(None, help="Noise level as PSNR in dB (instead of --t)."),
    t_max: Optional[float] = typer.Option(None, help="Where the constant is fixed (default: recipe, 1e3)."),
    anchor: Optional[str] = typer.Option(None, help="paper | gaussian (default: recipe)."),
    n_images: Optional[int] = typer.Option(None, help="Evaluate the first N images only."),
    batch_size: Optional[int] = typer.Option(None),
    seed: Optional[int] = typer.Option(None, help="Noise seed (noise is keyed by dataset index)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    weights: str = typer.Option("auto", help="auto (EMA weights when the run has them) | ema | raw."),
    stored_constant: bool = typer.Option(False, help="Reuse the constant stored at the end of training."),
    baseline: bool = typer.Option(True, help="Also report a Gaussian fitted to the training split."),
    per_image: Optional[Path] = typer.Option(None, help="Write per-image energies to FILE (.csv or .jsonl)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
):
    """Negative log-likelihood in bits/dim, one forward pass per image (the paper's protocol).

    Examples:
      dsmctl eval-nll runs/quickstart-1a2b3c4d5e6f
      dsmctl eval-nll run/model.safetensors --data data/imagenet64 --split validation --json
      dsmctl eval-nll run --psnr 30 --per-image logp.csv
    """
    from . import units
    from .evaluation import eval_nll as run_eval

    if t is not None and psnr is not None:
        raise UsageError("give --t or --psnr, not both")
    if psnr is not None:
        t = units.psnr_to_t(psnr)
    if anchor is not None and anchor not in ("paper", "gaussian"):
        raise UsageError(f"--anchor {anchor!r}: expected paper or gaussian")
    res = run_eval(ckpt, data, split, t, t_max, anchor, n_images, batch_size, seed, device, baseline, per_image,
                   stored_constant, weights)
    n = res["nll"]
    err.print(f"NLL {n['bits_per_dim']:.4f} ± {n['bits_per_dim_stderr']:.4f} bits/dim  "
              f"({n['nats_per_dim']:.4f} nats/dim, log p {n['log_p_db_per_dim']:.3f} dB/dim)  {ckpt}", style="bold")
    err.print(f"  protocol: {res['protocol']}")
    for key in ("baseline", "truth"):
        if key in res:
            b = res[key]
            label = b.get("name", "true density (closed form)")
            err.print(f"  {key}: {b['bits_per_dim']:.4f} bits/dim ({b['nats_per_dim']:.4f} nats/dim)  {label}; "
                      f"model − {key} = {n['bits_per_dim'] - b['bits_per_dim']:+.4f} bits/dim")
    if as_json:
        emit_json(res)


@app.command()
def generalize():
    """Train two models on disjoint subsets and compare their log-probabilities (paper Fig. 2)."""
    raise UsageError("generalize is not available in this version")


@app.command()
def dimension():
    """Local effective dimensionality d_eff(x, t) = E||x - D(x + sqrt(t) z, t)||^2 / t (paper Fig. 5)."""
    raise UsageError("dimension is not available in this version")


@app.command()
def sample():
    """Draw samples from a trained energy model."""
    raise UsageError("sample is not available in this version")


def main():
    from .checkpoint import CheckpointError
    from .data import DataError
    from .engine.trainer import TrainError
    from .nn.build import ShapeError
    from .recipe import RecipeError

    try:
        app()
    except (UsageError, RecipeError, DataError, CheckpointError, ShapeError, TrainError, ValueError) as e:
        err.print(f"error: {e}", markup=False, style="red", soft_wrap=True)
        sys.exit(getattr(e, "exit_code", 2))
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
