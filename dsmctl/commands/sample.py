"""`dsmctl sample`: draw one sample per seed from a trained model."""
from pathlib import Path
from typing import Optional

import typer

from .common import UsageError, check_writable, emit_json, need_choice, need_float, need_int, render


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
    from ..sample import generate as generation
    from ..sample import files as sample_io
    from ..outputs import DirLock
    from ..progress import FractionProgress

    check_options(ckpt, out, n, seeds, sampler, solver, steps, t_max, t_min, schedule, init, h0, h_schedule, beta,
                  noise_estimate, max_iters, langevin_steps, step_scale, predictor, batch_size, device, grid, merge)
    # One writer of --out: a single process or --merge holds its lock alone; the shards of one split run
    # (--shard R/W or torchrun) write disjoint files and hold it together.
    world = 1 if merge else generation.parse_shard(shard)[1]
    with DirLock(out, "--out", shared=world > 1):
        if merge:
            res = generation.merge_dir(ckpt, out, grid)
        else:
            seed_list = sample_io.parse_seeds(seeds) if seeds is not None else list(range(n))
            with FractionProgress(f"sample {sampler}, {len(seed_list)} seeds", not quiet) as bar:
                res = generation.sample_checkpoint(
                    ckpt, seed_list, out, batch_size=batch_size, device=device, shard=shard, grid_n=grid,
                    progress=bar, sampler=sampler, solver=solver, steps=steps, t_max=t_max, t_min=t_min,
                    schedule=schedule, init=init, h0=h0, h_schedule=h_schedule, beta=beta,
                    noise_estimate=noise_estimate, max_iters=max_iters, langevin_steps=langevin_steps,
                    step_scale=step_scale, predictor=predictor)
    from ..sample.files import summary_lines

    render(summary_lines(res))
    if as_json:
        emit_json(res)


def check_options(ckpt, out, n, seeds, sampler, solver, steps, t_max, t_min, schedule, init, h0, h_schedule, beta,
                  noise_estimate, max_iters, langevin_steps, step_scale, predictor, batch_size, device, grid, merge):
    """Every option checked before the model is loaded or --out is created; the seeds without expanding them."""
    from ..device import resolve_device
    from ..sample import files as sample_io
    from ..sample.samplers import SAMPLERS, SCHEDULES, SOLVERS

    need_choice(sampler, "--sampler", SAMPLERS)
    need_choice(solver, "--solver", SOLVERS)
    need_choice(schedule, "--schedule", SCHEDULES)
    need_choice(init, "--init", ("data", "model", "zero"))
    need_choice(h_schedule, "--h-schedule", ("constant", "paper"))
    need_choice(noise_estimate, "--noise-estimate", ("schedule", "residual", "time-score"))
    need_choice(predictor, "--predictor", ("ode", "sde", "none"))
    need_int(steps, "--steps", 1, 10 ** 7)
    need_float(t_max, "--t-max", 0, what="noise variance")
    need_float(t_min, "--t-min", 0, what="noise variance")
    if t_min is not None and t_max is not None and t_min >= t_max:
        raise UsageError(f"--t-min {t_min:g}: expected a noise variance below --t-max {t_max:g}")
    need_float(h0, "--h0", 0, 1, what="step size")
    need_float(beta, "--beta", 0, 1)
    need_int(max_iters, "--max-iters", 1, 10 ** 7)
    need_int(langevin_steps, "--langevin-steps", 1, 10 ** 6)
    need_float(step_scale, "--step-scale", 0)
    need_int(batch_size, "--batch-size", 1, 10 ** 7)
    need_int(grid, "--grid", 0, 10 ** 5)
    resolve_device(device)
    check_writable(out, "--out")
    if merge:
        return
    if n is None and seeds is None:
        raise UsageError("sample: give --n N or --seeds LIST")
    need_int(n, "--n", 1)
    count = sample_io.count_seeds(sample_io.seed_ranges(seeds)) if seeds is not None else n
    if n is not None and count != n:
        raise UsageError(f"--n {n} but --seeds {seeds!r} lists {count} seeds")
    memory_for_seeds(ckpt, count, "--seeds " + seeds if seeds is not None else f"--n {n}")


def memory_for_seeds(ckpt, count, what):
    """Refuse a number of samples whose results cannot be held in memory (the samples are kept as float32,
    quantized and uint8 copies, plus a seed list): ~13 bytes per value and 64 per seed."""
    import math

    from ..budget import need_memory
    from ..nn.model_file import read_meta

    meta = read_meta(ckpt)  # a missing or unreadable model is refused here
    try:
        d = math.prod(int(v) for v in meta.get("shape"))
    except (TypeError, ValueError, AttributeError):  # a malformed shape is refused when the model is loaded
        d = 1
    need_memory(count * (64 + 13 * max(d, 1)), what, None, f"to hold {count:,} samples of {d:,} values")
