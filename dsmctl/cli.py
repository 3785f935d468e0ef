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
    shape: Optional[str] = typer.Option(None, help="With --dry-run: the example shape C,H,W (or D) to assume "
                                        "instead of opening the data, e.g. 3,64,64 before ImageNet64 is prepared."),
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

        try:
            dims = tuple(int(v) for v in shape.split(",")) if shape else None
        except ValueError:
            raise UsageError(f"--shape {shape!r}: expected comma-separated integers, e.g. 3,64,64") from None
        info = describe(r, dims)
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
    estimator: str = typer.Option("one-shot", help="one-shot (the paper's) | dequantized (8-bit data, a bound) | "
                                  "pf-ode (probability-flow ODE)."),
    draws: int = typer.Option(4, help="dequantized: uniform noise draws per image; --consistency: noise draws per level."),
    t_min: Optional[float] = typer.Option(None, help="pf-ode: start of the ODE (default: the recipe's noise.t_min)."),
    rtol: float = typer.Option(1e-5, help="pf-ode: relative tolerance of the adaptive solver."),
    atol: float = typer.Option(1e-5, help="pf-ode: absolute tolerance of the adaptive solver."),
    probes: Optional[int] = typer.Option(None, help="pf-ode: Hutchinson probes per image; 0 = exact trace "
                                         "(default: exact for d <= 64, else 1 probe)."),
    max_steps: int = typer.Option(1000, help="pf-ode: accepted steps per image before giving up."),
    consistency: bool = typer.Option(False, "--consistency", help="Also predict the PF-ODE − one-shot gap from the "
                                     "heat-equation residual (Stein form, --draws noise draws; minutes, not hours)."),
    denoising_curve: bool = typer.Option(False, "--denoising-curve", help="Also measure output vs input PSNR (Table 1)."),
    denoiser: Optional[Path] = typer.Option(None, help="A denoiser checkpoint to put beside the model in the curve."),
    psnr_grid: str = typer.Option("0,10,20,30,40", help="Input PSNRs (dB) of the denoising curve."),
    plots: Optional[Path] = typer.Option(None, help="Write figures (log p histogram, image strip, curves) to DIR."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
):
    """Negative log-likelihood in bits/dim, one forward pass per image (the paper's protocol) by default.

    Examples:
      dsmctl eval-nll runs/quickstart-1a2b3c4d5e6f
      dsmctl eval-nll run/model.safetensors --data data/imagenet64 --split validation --json
      dsmctl eval-nll run --psnr 30 --per-image logp.csv
      dsmctl eval-nll run --estimator dequantized --draws 8
      dsmctl eval-nll run --estimator pf-ode --probes 1 --rtol 1e-5 --n-images 200
      dsmctl eval-nll run --consistency
      dsmctl eval-nll run --denoising-curve --denoiser runs/den --plots figs/
    """
    from . import units
    from .evaluation import ESTIMATORS, eval_nll as run_eval

    if t is not None and psnr is not None:
        raise UsageError("give --t or --psnr, not both")
    if psnr is not None:
        t = units.psnr_to_t(psnr)
    if anchor is not None and anchor not in ("paper", "gaussian"):
        raise UsageError(f"--anchor {anchor!r}: expected paper or gaussian")
    if estimator not in ESTIMATORS:
        raise UsageError(f"--estimator {estimator!r}: expected one of {', '.join(ESTIMATORS)}")
    if draws < 1 or max_steps < 1 or (probes is not None and probes < 0) or rtol <= 0 or atol <= 0:
        raise UsageError("--draws and --max-steps must be >= 1, --probes >= 0, --rtol and --atol > 0")
    if t_min is not None and t_min <= 0:
        raise UsageError(f"--t-min {t_min}: expected a positive noise variance")
    ode = {"t_min": t_min, "rtol": rtol, "atol": atol, "max_steps": max_steps}
    if probes is not None:
        ode["probes"] = probes or None
    den = None
    if denoising_curve or denoiser:
        try:
            den = {"psnrs": [float(v) for v in psnr_grid.split(",") if v.strip()], "denoiser": denoiser}
        except ValueError:
            raise UsageError(f"--psnr-grid {psnr_grid!r}: expected comma-separated PSNRs in dB") from None
    res = run_eval(ckpt, data, split, t, t_max, anchor, n_images, batch_size, seed, device, baseline, per_image,
                   stored_constant, weights, estimator=estimator, draws=draws, ode=ode, denoising=den, plots=plots,
                   log=lambda text: err.print(text), consistency=consistency)
    from .evaluation import summary_lines

    render(summary_lines(res, ckpt))
    if as_json:
        emit_json(res)


def render(lines):
    """Print a module's [(text, style or None)] report on stderr."""
    for text, style in lines:
        err.print(text, style=style)


@app.command()
def generalize(
    recipe: Optional[Path] = typer.Argument(None, help="Recipe YAML to train on each subset (omit with --models)."),
    n: str = typer.Option("", "--n", help="Comma-separated subset sizes N, e.g. 10,100,1000."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Directory for the run dirs, tables and plots."),
    set_: List[str] = typer.Option([], "--set", help="Override a recipe value (repeatable), e.g. --set train.steps=800."),
    steps: Optional[int] = typer.Option(None, help="Training steps for every model (overrides train.steps)."),
    split: str = typer.Option("first-last", help="first-last (first N vs last N) | random:SEED (disjoint random)."),
    models: List[Path] = typer.Option([], "--models", help="Two existing checkpoints to compare instead of training "
                                      "(give --models twice)."),
    n_eval: int = typer.Option(500, help="Images evaluated per set (each subset and the test split)."),
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
    from .analysis import generalization as G
    from .evaluation import pick_device

    if t is not None and t < 0:
        raise UsageError(f"--t {t}: expected a non-negative noise variance")
    if models:
        if len(models) != 2 or recipe is not None:
            raise UsageError("--models takes exactly two checkpoints (give it twice) and no recipe")
        res = G.run_pair(models[0], models[1], n_eval, threshold, batch_size or 256, pick_device(device), out, plot,
                         t or 0.0)
    else:
        from .recipe import load_recipe

        if recipe is None or out is None or not n:
            raise UsageError("generalize: give a RECIPE, --n N1,N2,... and --out DIR (or --models A --models B)")
        try:
            ns = [int(v) for v in n.split(",") if v.strip()]
        except ValueError:
            raise UsageError(f"--n {n!r}: expected comma-separated integers, e.g. 10,100,1000") from None
        overrides = list(set_) + ([f"train.steps={steps}"] if steps else [])
        r = load_recipe(recipe, overrides)
        if r.data.subset:
            raise UsageError(f"{recipe}: data.subset is set ({r.data.subset}); generalize chooses the subsets itself")
        G.subset_specs(1, split)  # validates --split
        res = G.run(r, ns, out, split, n_eval, threshold, batch_size, pick_device(device), progress=not quiet,
                    log=lambda text: err.print(text), plot=plot, t=t)
    err.print(G.summary_text(res["rows"]))
    if res.get("protocol"):
        err.print(f"protocol: {res['protocol']}")
    if res.get("out"):
        err.print(f"wrote {res['out']}/generalization.json, generalization.txt, per_image.csv"
                  + (", scatter.png, summary.png" if plot else ""))
    if as_json:
        emit_json(res)


@app.command()
def dimension(
    ckpt: Path = typer.Argument(..., help="Model file, checkpoint dir or run dir."),
    t_grid: Optional[str] = typer.Option(None, help="LO:HI:N (log-spaced) or a comma list of t "
                                         "(default: the trained range, 2 per decade)."),
    draws: int = typer.Option(100, help="Noise draws K per image and t (the paper used 1000)."),
    n_images: int = typer.Option(16, help="Profile the first N images of the evaluation split."),
    data: Optional[str] = typer.Option(None, help="Evaluation source (default: the model's own)."),
    split: Optional[str] = typer.Option(None, help="Split (default: the recipe's eval split)."),
    images: Optional[str] = typer.Option(None, help="Positions (0..N-1) of the images to plot, e.g. 0,3,7 "
                                         "(default: most to least probable)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Per-image rows to FILE (.csv or .jsonl)."),
    plot: Optional[Path] = typer.Option(None, help="PNG of d_eff and E log p_t against t (Fig. 5)."),
    batch_size: Optional[int] = typer.Option(None),
    seed: Optional[int] = typer.Option(None, help="Noise seed (noise is keyed by dataset index)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    as_json: bool = typer.Option(False, "--json", help="Print the dataset means as JSON on stdout."),
):
    """Local effective dimensionality d_eff(x, t) = E||x - D(x + sqrt(t) z, t)||^2 / t (paper Fig. 5).

    Examples:
      dsmctl dimension runs/quickstart --t-grid 1e-6:10:15 --draws 100 --out deff.csv --plot deff.png
    """
    from .analysis.dimension import parse_t_grid, run, summary_text

    if draws < 1 or n_images < 1:
        raise UsageError("--draws and --n-images must be >= 1")
    grid = parse_t_grid(t_grid) if t_grid else None
    try:
        pos = [int(v) for v in images.split(",") if v.strip()] if images else None
    except ValueError:
        raise UsageError(f"--images {images!r}: expected comma-separated positions, e.g. 0,3,7") from None
    res = run(ckpt, grid, draws, n_images, data, split, batch_size, seed, device, out, plot, pos,
              log=lambda text: err.print(text))
    err.print(summary_text(res))
    for key in ("out", "plot"):
        if key in res:
            err.print(f"wrote {res[key]}")
    if as_json:
        emit_json(res)


@app.command()
def sample(
    ckpt: Path = typer.Argument(..., help="Model file, checkpoint dir or run dir."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (PNGs, grid.png, samples.npz, stats.json)."),
    n: Optional[int] = typer.Option(None, "--n", help="Number of samples: seeds 0..N-1."),
    seeds: Optional[str] = typer.Option(None, help="Seeds, e.g. 0-63 or 0,5,10-19; one sample per seed."),
    sampler: str = typer.Option("ode", help="ode | sde | ascent | mala | ula"),
    solver: str = typer.Option("heun", help="ode/sde: euler | heun."),
    steps: Optional[int] = typer.Option(None, help="ode/sde: steps (default 100); mala/ula: noise levels (30)."),
    t_max: Optional[float] = typer.Option(None, help="First noise variance (default: the recipe's noise.t_max)."),
    t_min: Optional[float] = typer.Option(None, help="Last noise variance (default: recipe noise.t_min, >= 1e-5)."),
    schedule: str = typer.Option("auto", help="auto | log | edm (auto: edm for ode/sde, log for mala/ula)."),
    init: str = typer.Option("data", help="Start N(m, (t_max+v) I): data: m, v of the training data (else model) | "
                                          "model: read from the model | zero: N(0, t_max I)."),
    h0: float = typer.Option(0.01, help="ascent: step size h (or the first one of --h-schedule paper)."),
    h_schedule: str = typer.Option("constant", help="ascent: constant | paper (h_k = h0 k/(1 + h0 (k-1)), fast, "
                                                    "over-smoothed)."),
    beta: float = typer.Option(0.5, help="ascent: noise injection; 1 = none, smaller = more."),
    noise_estimate: str = typer.Option("schedule", help="ascent: schedule | residual (the paper's) | time-score."),
    max_iters: int = typer.Option(5000, help="ascent: iteration cap."),
    langevin_steps: int = typer.Option(10, help="mala/ula: Langevin steps per noise level."),
    step_scale: float = typer.Option(0.1, help="mala/ula: step size eps = STEP_SCALE * t."),
    predictor: str = typer.Option("ode", help="mala/ula: step between levels: ode | sde | none (pure annealing)."),
    batch_size: int = typer.Option(64, help="Samples per batch (does not change any image)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    shard: Optional[str] = typer.Option(None, help="RANK/WORLD: sample every WORLD-th seed (default: torchrun's "
                                                   "RANK/WORLD_SIZE, else 0/1)."),
    merge: bool = typer.Option(False, "--merge", help="Only merge the shard files already in --out."),
    grid: int = typer.Option(64, help="Samples shown in grid.png."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
):
    """Draw samples: one per seed, the same image whatever the batch size or number of processes.

    Examples:
      dsmctl sample runs/quickstart --n 64 --out samples/qs
      dsmctl sample runs/quickstart --seeds 0-63 --sampler mala --steps 30 --out samples/qs-mala --json
      torchrun --standalone --nproc_per_node 4 -m dsmctl sample RUN --seeds 0-9999 --out samples/big
    """
    from . import generation, sample_io
    from .progress import FractionProgress

    if merge:
        res = generation.merge_dir(ckpt, out, grid)
    else:
        if n is None and seeds is None:
            raise UsageError("sample: give --n N or --seeds LIST")
        seed_list = sample_io.parse_seeds(seeds) if seeds is not None else list(range(n))
        if n is not None and (n < 1 or len(seed_list) != n):
            raise UsageError(f"--n {n} but --seeds {seeds!r} lists {len(seed_list)} seeds")
        if batch_size < 1:
            raise UsageError(f"--batch-size {batch_size}: expected a positive number")
        with FractionProgress(f"sample {sampler}, {len(seed_list)} seeds", not quiet) as bar:
            res = generation.sample_checkpoint(
                ckpt, seed_list, out, batch_size=batch_size, device=device, shard=shard, grid_n=grid, progress=bar,
                sampler=sampler, solver=solver, steps=steps, t_max=t_max, t_min=t_min, schedule=schedule,
                init=init, h0=h0, h_schedule=h_schedule, beta=beta, noise_estimate=noise_estimate,
                max_iters=max_iters, langevin_steps=langevin_steps, step_scale=step_scale, predictor=predictor)
    from .sample_io import summary_lines

    render(summary_lines(res))
    if as_json:
        emit_json(res)


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
