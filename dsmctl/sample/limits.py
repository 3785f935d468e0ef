"""The limits of a sampling request, one check each, shared by `dsmctl sample` (commands/sample.py) and the Python
API (api.Model.sample) so that they cannot drift: seeds and their count, sampler settings, noise levels, the memory
of the results. Every refusal is a one-line ValueError naming the option as the caller spells it (--steps, steps=)."""
import math

import numpy as np

from ..budget import need_memory
from ..recipe_yaml import show
from ..units import check_t

MAX_STEPS = 10 ** 7  # ode/sde steps, mala/ula noise levels (each holds one float64 noise level)
MAX_ITERS = 10 ** 7  # ascent iterations
MAX_LANGEVIN = 10 ** 6  # mala/ula steps per noise level
MAX_BATCH = 10 ** 7
MAX_SEED = 2 ** 63 - 1  # seeds key the noise generator (int64)
BYTES_PER_VALUE, BYTES_PER_SEED = 13, 64  # the results: float32, quantized and uint8 copies; the seed list


def label(name, value, cli):
    """How the caller spells an option with its value: '--t-max 5' (CLI) or 't_max=5' (API)."""
    return f"--{name.replace('_', '-')} {value}" if cli else f"{name}={show(value)}"


def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _integer(name, value, lo, hi, cli):
    if not _is_int(value) or not lo <= value <= hi:
        raise ValueError(f"{label(name, value, cli)}: expected an integer in {lo:,}..{hi:,}")
    return int(value)


def _fraction(name, value, cli, hi=1.0):
    ok = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool) and math.isfinite(value)
    if not (ok and 0 < value <= hi):
        rng = f"in (0, {hi:g}]" if hi != math.inf else "> 0"
        raise ValueError(f"{label(name, value, cli)}: expected a finite number {rng}")
    return float(value)


def check_settings(cli=False, **settings):
    """Refuse a sampler setting out of its range (None: the default, not checked here); names as SamplerConfig's
    fields, plus batch_size."""
    counts = {"steps": MAX_STEPS, "max_iters": MAX_ITERS, "langevin_steps": MAX_LANGEVIN, "batch_size": MAX_BATCH}
    fractions = {"h0": 1.0, "beta": 1.0, "step_scale": math.inf}
    for name, value in settings.items():
        if value is None:
            continue
        if name in counts:
            _integer(name, value, 1, counts[name], cli)
        elif name in ("t_max", "t_min"):
            check_t(value, label(name, value, cli), positive=True)
        elif name in fractions:
            _fraction(name, value, cli, fractions[name])
    t_min, t_max = settings.get("t_min"), settings.get("t_max")
    if t_min is not None and t_max is not None and t_min >= t_max:
        raise ValueError(f"{label('t_min', t_min, cli)}: expected a noise variance below "
                         f"{label('t_max', t_max, cli)}")


def check_n_seed(n, seed=0, cli=False):
    """n samples with seeds seed .. seed + n - 1: n >= 1, seeds non-negative and within int64."""
    n = _integer("n", n, 1, MAX_SEED, cli)
    seed = _integer("seed", seed, 0, MAX_SEED, cli)
    if seed + n - 1 > MAX_SEED:
        raise ValueError(f"{label('seed', seed, cli)}: seeds up to {seed + n - 1:,} go beyond {MAX_SEED:,}")
    return n, seed


def check_count(count, d, what):
    """Refuse a number of samples whose results cannot be held in memory (budget.py), before any is drawn."""
    need_memory(count * (BYTES_PER_SEED + BYTES_PER_VALUE * max(int(d), 1)), what, None,
                f"to hold {count:,} samples of {d:,} values")
