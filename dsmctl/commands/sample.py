"""`dsmctl sample`: draw one sample per seed from a trained model."""
from pathlib import Path
from typing import Optional

import typer

from .common import check_writable, emit_json, render


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
    from ..outputs import DirLock
    from ..progress import FractionProgress
    from ..sample import generate as generation
    from ..sample.files import summary_lines
    from ..sample.request import SampleRequest

    request = SampleRequest(
        ckpt, out=out, n=n, seeds=seeds, sampler=sampler, solver=solver, steps=steps, t_max=t_max, t_min=t_min,
        schedule=schedule, init=init, h0=h0, h_schedule=h_schedule, beta=beta, noise_estimate=noise_estimate,
        max_iters=max_iters, langevin_steps=langevin_steps, step_scale=step_scale, predictor=predictor,
        batch_size=batch_size, device=device, shard=shard, merge=merge, grid=grid)
    check_request(request)
    # One writer of --out: a single process or --merge holds its lock alone; the shards of one split run
    # (--shard R/W or torchrun) write disjoint files and hold it together.
    world = 1 if merge else generation.parse_shard(shard)[1]
    with DirLock(out, "--out", shared=world > 1):
        if merge:
            res = generation.merge_dir(ckpt, out, grid)
        else:
            with FractionProgress(f"sample {sampler}, {request.count()} seeds", not quiet) as bar:
                res = generation.sample_checkpoint(request, progress=bar)
    render(summary_lines(res))
    if as_json:
        emit_json(res)


def check_request(request):
    """Every option checked before the model is loaded or --out is created; the seeds without expanding them."""
    request.check()
    check_writable(request.out, "--out")
    if not request.merge:
        seeds = request.seeds
        memory_for_seeds(request.model, request.count(), "--seeds " + seeds if seeds is not None else f"--n {request.n}")


def memory_for_seeds(ckpt, count, what):
    """Refuse a number of samples whose results cannot be held in memory (the samples are kept as float32,
    quantized and uint8 copies, plus a seed list): ~13 bytes per value and 64 per seed."""
    import math

    from ..nn.model_file import read_meta
    from ..sample.limits import check_count

    meta = read_meta(ckpt)  # a missing or unreadable model is refused here
    try:
        d = math.prod(int(v) for v in meta.get("shape"))
    except (TypeError, ValueError, AttributeError):  # a malformed shape is refused when the model is loaded
        d = 1
    check_count(count, d, what)
