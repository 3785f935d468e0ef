"""Checks of a synthetic density's parameters (`prepare synthetic --param`, a recipe's data.synthetic) before
anything is sampled: each key's type and range, named in a one-line DataError, and the memory of the samples."""
import math

from ..budget import BudgetError, need_memory
from ..recipe_yaml import show
from .cache import DataError

MAX_D = 16_384  # dimensions of one example: the densities keep d x d float64 matrices (2 GiB at this size)
MAX_N = 10 ** 9  # examples per split (the memory budget below usually binds first)
MAX_SEED = 2 ** 63 - 1
BYTES_PER_VALUE = 20  # sampling holds float64 noise and values, then the float32 result


def _number(kind, key, value, lo, hi, integer=False, lo_open=False):
    """value as an int (integer=True) or a finite float in [lo, hi] (lo excluded when lo_open), else DataError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        ok = False
    elif integer:
        ok = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    else:
        ok = math.isfinite(value)
    ok = ok and (value > lo if lo_open else value >= lo) and value <= hi
    if not ok:
        what = "an integer" if integer else "a finite number"
        if integer:
            rng = f" in {lo:,}..{hi:,}"
        else:
            rng = "" if lo == -math.inf else (f" > {lo:g}" if lo_open else f" >= {lo:g}")
            rng += "" if hi == math.inf else f" and <= {hi:g}"
        raise DataError(f"synthetic data ({kind}): {key} {show(value)}: expected {what}{rng}")
    return int(value) if integer else float(value)


def _positive_list(kind, key, value, length=None):
    if not isinstance(value, (list, tuple)) or not value or (length is not None and len(value) != length):
        count = f"{length} positive numbers" if length is not None else "a non-empty list of positive numbers"
        raise DataError(f"synthetic data ({kind}): {key} {show(value)}: expected {count}")
    return [_number(kind, f"{key}[{i}]", v, 0, math.inf, lo_open=True) for i, v in enumerate(value)]


def check_spec(spec):
    """Refuse (DataError naming the key and its range) a synthetic spec {kind, d | size, ..., n_train, n_test,
    seed} whose values are of the wrong type, out of range, or whose samples would not fit in memory."""
    if not isinstance(spec, dict):
        raise DataError(f"synthetic data {show(spec)}: expected a mapping {{kind, d, n_train, ...}}")
    kind = spec.get("kind")
    n = 0
    for key, default in (("n_train", 10_000), ("n_test", 2_000)):
        n += _number(kind, key, spec.get(key, default), 1, MAX_N, integer=True)
    _number(kind, "seed", spec.get("seed", 0), 0, MAX_SEED, integer=True)
    if kind in ("gsm", "gaussian"):
        if "d" not in spec:
            raise DataError(f"synthetic data ({kind}): needs the dimension d (an integer in 1..{MAX_D:,})")
        d = _number(kind, "d", spec["d"], 1, MAX_D, integer=True)
    elif kind == "gsm-image":
        size = _number(kind, "size", spec.get("size", 16), 1, int(math.isqrt(MAX_D)), integer=True)
        channels = _number(kind, "channels", spec.get("channels", 1), 1, MAX_D, integer=True)
        d = channels * size * size
        if d > MAX_D:
            raise DataError(f"synthetic data ({kind}): channels {channels} x size {size}^2 = {d:,} values per "
                            f"image; expected at most {MAX_D:,}")
        for key in ("spectrum_exponent", "mean"):
            if key in spec:
                _number(kind, key, spec[key], -math.inf, math.inf)
        if "f0" in spec:
            _number(kind, "f0", spec["f0"], 0, math.inf)
        if "pixel_std" in spec:
            _number(kind, "pixel_std", spec["pixel_std"], 0, math.inf, lo_open=True)
    else:
        return  # an unknown kind: densities.from_spec names the kinds
    if "variances" in spec:
        variances = _positive_list(kind, "variances", spec["variances"])
        if spec.get("weights") is not None:
            _positive_list(kind, "weights", spec["weights"], len(variances))
    if "variance" in spec:
        _number(kind, "variance", spec["variance"], 0, math.inf, lo_open=True)
    if "basis_seed" in spec:
        _number(kind, "basis_seed", spec["basis_seed"], 0, MAX_SEED, integer=True)
    if "spectrum" in spec:
        sp = spec["spectrum"]
        if not isinstance(sp, dict) or set(sp) != {"scale", "exponent"}:
            raise DataError(f"synthetic data ({kind}): spectrum {show(sp)}: expected {{scale, exponent}}")
        _number(kind, "spectrum.scale", sp["scale"], 0, math.inf, lo_open=True)
        _number(kind, "spectrum.exponent", sp["exponent"], -math.inf, math.inf)
    try:
        need_memory(n * d * BYTES_PER_VALUE, f"synthetic data ({kind}): n_train + n_test = {n:,} examples of "
                    f"{d:,} values", None, "to sample")
    except BudgetError as e:
        raise DataError(str(e)) from None
