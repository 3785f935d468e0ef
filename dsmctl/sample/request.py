"""What `dsmctl sample` is asked to do (SampleRequest, checked before a model is loaded or a file written); the
Python API's Model.sample checks its sampler options through the same request."""
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Optional, Sequence

from ..options import UsageError, need_choice, need_float, need_int
from .samplers import SAMPLERS, SCHEDULES, SOLVERS, SamplerConfig


@dataclass(frozen=True)
class SampleRequest:
    """`dsmctl sample`'s options (None: the model recipe's value or the sampler's default)."""
    model: str | Path  # model file, checkpoint directory or run directory
    out: Optional[str | Path] = None  # output directory (None: the Python API, which returns the images)
    n: Optional[int] = None  # seeds 0 .. n-1
    seeds: Optional[str | Sequence[int]] = None  # "0-63" or "0,5,10-19" (the CLI) or a list of ints (the API)
    sampler: str = "ode"  # ode | sde | ascent | mala | ula
    solver: str = "heun"  # ode / sde: euler | heun
    steps: Optional[int] = None  # ode / sde: steps (100); mala / ula: noise levels (30)
    t_max: Optional[float] = None  # first noise variance (default: the recipe's noise.t_max)
    t_min: Optional[float] = None  # last noise variance (default: the recipe's noise.t_min, >= 1e-5)
    schedule: str = "auto"  # auto | log | edm
    rho: float = 7.0  # edm schedule's exponent (the Python API only)
    init: str = "data"  # data | model | zero
    h0: float = 0.01  # ascent: step size
    h_schedule: str = "constant"  # ascent: constant | paper
    beta: float = 0.5  # ascent: noise injection
    noise_estimate: str = "schedule"  # ascent: schedule | residual | time-score
    max_iters: int = 5000  # ascent: iteration cap
    langevin_steps: int = 10  # mala / ula: Langevin steps per noise level
    step_scale: float = 0.1  # mala / ula: eps = step_scale * t
    predictor: str = "ode"  # mala / ula: ode | sde | none
    batch_size: int = 64  # samples per batch (does not change any image)
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    shard: Optional[str] = None  # RANK/WORLD (default: torchrun's RANK/WORLD_SIZE, else 0/1)
    merge: bool = False  # only merge the shard files already in out
    grid: int = 64  # samples shown in grid.png
    python: bool = field(default=False, compare=False)  # name options as Python keywords (steps=) in messages

    def name(self, option):
        """How a message names a field: --max-iters (the CLI) or max_iters= (the Python API)."""
        return f"{option}=" if self.python else "--" + option.replace("_", "-")

    def check(self):
        """Refuse any bad value (UsageError naming the option) before the model is loaded or out is created; the
        seeds are counted without expanding them. Returns self."""
        from ..device import resolve_device
        from . import limits

        o = self.name
        need_choice(self.sampler, o("sampler"), SAMPLERS)
        need_choice(self.solver, o("solver"), SOLVERS)
        need_choice(self.schedule, o("schedule"), SCHEDULES)
        need_choice(self.init, o("init"), ("data", "model", "zero"))
        need_choice(self.h_schedule, o("h_schedule"), ("constant", "paper"))
        need_choice(self.noise_estimate, o("noise_estimate"), ("schedule", "residual", "time-score"))
        need_choice(self.predictor, o("predictor"), ("ode", "sde", "none"))
        # The numeric limits: sample/limits.py, the one check the Python API shares (messages differ only in
        # how the option is spelled).
        limits.check_settings(cli=not self.python, steps=self.steps, t_max=self.t_max, t_min=self.t_min, h0=self.h0,
                              beta=self.beta, max_iters=self.max_iters, langevin_steps=self.langevin_steps,
                              step_scale=self.step_scale, batch_size=self.batch_size)
        need_float(self.rho, o("rho"), 0)
        need_int(self.grid, o("grid"), 0, 10 ** 5)
        resolve_device(self.device, label=f"device={self.device!r}" if self.python else None)
        if self.merge:
            return self
        if self.n is None and self.seeds is None:
            raise UsageError("sample: give --n N or --seeds LIST")
        if self.n is not None:
            limits.check_n_seed(self.n, 0, cli=not self.python)
        if isinstance(self.seeds, (list, tuple)):
            if not self.seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in self.seeds):
                raise UsageError("seeds: expected a non-empty list of integers >= 0")
        count = self.count()
        if self.n is not None and count != self.n:
            raise UsageError(f"--n {self.n} but --seeds {self.seeds!r} lists {count} seeds")
        return self

    def count(self):
        """How many seeds, without expanding a range."""
        from . import files as sample_io

        if self.seeds is None:
            return self.n
        if isinstance(self.seeds, (list, tuple)):
            return len(self.seeds)
        return sample_io.count_seeds(sample_io.seed_ranges(self.seeds))

    def seed_list(self):
        """The seeds, in the order given."""
        from . import files as sample_io

        if self.seeds is None:
            return list(range(self.n))
        return list(self.seeds) if isinstance(self.seeds, (list, tuple)) else sample_io.parse_seeds(self.seeds)

    def sampler_options(self):
        """The SamplerConfig fields (None: the recipe's or the sampler's default; generate.sampler_setup fills them)."""
        return {f.name: getattr(self, f.name) for f in fields(SamplerConfig)}
