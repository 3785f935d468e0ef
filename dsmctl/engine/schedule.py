"""Learning-rate factor as a function of the global step (so it is the same for any number of processes)."""
import math


def lr_factor(step, optim, total_steps):
    warm = min(1.0, (step + 1) / optim.warmup_steps) if optim.warmup_steps else 1.0
    if optim.schedule == "halving":  # the paper: halve every `halve_every` steps
        return warm * 0.5 ** (step // optim.halve_every)
    if optim.schedule == "cosine":
        return warm * 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    if optim.schedule == "onecycle":  # linear up over 30% of the run, cosine down to ~0
        peak = max(1, int(0.3 * total_steps))
        if step < peak:
            return 0.04 + 0.96 * step / peak
        return 0.5 * (1 + math.cos(math.pi * (step - peak) / max(1, total_steps - peak))) + 1e-4
    return warm
