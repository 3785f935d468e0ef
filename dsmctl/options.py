"""Option checks shared by the commands and the typed requests (sample/request.py): one line naming the option, its
value and what was expected. An option named "--steps" reads "--steps 0: ...", a Python keyword "steps=" reads
"steps=0: ..."."""
import math
import numbers


class UsageError(ValueError):
    """Bad input found by the CLI itself."""


def said(option, value, quoted=False):
    """How a message names the option and its value."""
    text = repr(value) if quoted else f"{value}"
    return f"{option}{text}" if option.endswith("=") else f"{option} {text}"


def need_int(value, option, lo=1, hi=None, why=""):
    """An integer option in [lo, hi] (None: no bound); `why` explains the upper bound."""
    if value is None:
        return None
    expected = f"an integer >= {lo}" if hi is None else f"an integer in {lo}..{hi:,}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise UsageError(f"{said(option, value, True)}: expected {expected}{why}")
    if value < lo or (hi is not None and value > hi):
        raise UsageError(f"{said(option, value)}: expected {expected}{why}")
    return value


def need_float(value, option, lo=None, hi=None, lo_open=True, hi_open=False, what="a number"):
    """A finite float option; lo/hi bounds, open (excluded) or closed."""
    if value is None:
        return None
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
    ok = ok and (lo is None or (value > lo if lo_open else value >= lo))
    ok = ok and (hi is None or (value < hi if hi_open else value <= hi))
    if not ok:
        if lo is not None and hi is not None:
            rng = f" in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        elif lo is not None:
            rng = f" {'>' if lo_open else '>='} {lo:g}"
        elif hi is not None:
            rng = f" {'<' if hi_open else '<='} {hi:g}"
        else:
            rng = ""
        number = isinstance(value, numbers.Real) and not isinstance(value, bool)
        raise UsageError(f"{said(option, value, not number)}: expected a finite {what}{rng}")
    return value


def need_t(value, option, positive=False):
    """A noise-variance option: units.check_t (the one check of a noise level, shared with the API and recipes)."""
    from .units import check_t

    if value is None:
        return None
    try:
        return check_t(value, f"{option} {value}", positive)
    except ValueError as e:
        raise UsageError(str(e)) from None


def need_choice(value, option, choices):
    if value not in choices:
        from .recipe_yaml import show  # repr, shortened: a 20,000-value option is not echoed whole

        text = show(value)
        raise UsageError(f"{option}{text if option.endswith('=') else ' ' + text}: expected one of {', '.join(choices)}")
    return value
