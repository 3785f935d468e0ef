"""Collective per-step checks: non-finite loss terms, and stop requests (SIGTERM/SIGINT).

Every process contributes one small row, the rows are gathered, and every process takes the same
decision from them, so under DDP all ranks skip a bad step together (a rank that skipped backward
alone would leave the others waiting in the gradient all-reduce) and all stop at the same step.
"""
import math

import torch

from .errors import DivergedError

# Row layout: bad space term, bad time term, bad total loss, t min / t max over bad images, n bad, stop,
# then sums of the loss and of its two terms over this process's images and their number (for logging
# global means at no extra cost).
SPACE, TIME, LOSS, T_LO, T_HI, N_BAD, STOP, LOSS_SUM, SPACE_SUM, TIME_SUM, N = range(11)


class Verdict:
    def __init__(self, rows):
        self.rows = rows
        self.stop = bool(rows[:, STOP].max() > 0)
        self.bad = bool(rows[:, [SPACE, TIME, LOSS]].max() > 0)
        n = rows[:, N].sum().item()
        self.means = {k: rows[:, col].sum().item() / n for k, col in
                      (("loss", LOSS_SUM), ("space", SPACE_SUM), ("time", TIME_SUM))}

    def describe(self):
        """'time-score term for t in [1e-09, 3e-09] (3 images on rank 1)'."""
        r = self.rows
        terms = [name for col, name in ((SPACE, "space-score"), (TIME, "time-score")) if r[:, col].max() > 0]
        what = " and ".join(terms) + (" term" if len(terms) == 1 else " terms") if terms else "total loss"
        ranks = [i for i in range(len(r)) if r[i, [SPACE, TIME, LOSS]].max() > 0]
        lo, hi = r[ranks, T_LO].min().item(), r[ranks, T_HI].max().item()
        where = f" for t in [{lo:.3g}, {hi:.3g}]" if math.isfinite(lo) else ""
        n = int(r[ranks, N_BAD].sum().item())
        on = f" on rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))}" if len(r) > 1 else ""
        return f"non-finite {what}{where} ({n} image{'s' if n != 1 else ''}{on})"


def check(acc, loss, terms, t, stop_requested):
    """Gather every process's status for this step; a collective, call it on every rank every step.

    The row is built on the device and crosses to the host once, after the gather."""
    space_ok, time_ok = torch.isfinite(terms["space"]), torch.isfinite(terms["time"])
    bad = ~(space_ok & time_ok)
    t = t.detach().double()
    inf = torch.full_like(t, math.inf)
    n = torch.tensor(float(len(t)), dtype=torch.float64, device=t.device)
    row = torch.stack([
        (~space_ok).any().double(), (~time_ok).any().double(), (~torch.isfinite(loss.detach())).any().double(),
        torch.where(bad, t, inf).min(), torch.where(bad, t, -inf).max(), bad.sum().double(),
        torch.tensor(float(bool(stop_requested)), dtype=torch.float64, device=t.device),
        loss.detach().double() * n, terms["space"].double().sum(), terms["time"].double().sum(), n])
    if acc is None or acc.num_processes == 1:
        return Verdict(row[None].cpu())
    from accelerate.utils import gather

    return Verdict(gather(row[None].to(acc.device)).cpu())


class SkipCounter:
    """Counts skipped steps over the whole run (restored on resume); raises past the limit."""

    def __init__(self, limit, skipped=0):
        self.limit, self.skipped = limit, skipped

    def skip(self, step, reason, last_checkpoint):
        self.skipped += 1
        if self.skipped > self.limit:
            raise DivergedError(
                f"step {step}: {reason}; {self.skipped} steps skipped in total, over train.max_nonfinite = "
                f"{self.limit}: stopping without saving; last checkpoint {last_checkpoint or '(none)'} is intact")
        return f"[train] step {step}: {reason}: step skipped ({self.skipped}/{self.limit} allowed)"


def check_finite_weights(model, step, last_checkpoint):
    """Before a checkpoint is written: every parameter finite, else stop (exit 3) and write nothing.

    Skipped steps never reach the weights and every applied update is finite (bounded by optim.lr <= 1e30),
    so this does not fire in practice; it makes "every checkpoint holds finite weights" true by construction."""
    bad = [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        raise DivergedError(f"step {step}: non-finite weights ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})"
                            f": stopping without saving; last checkpoint {last_checkpoint or '(none)'} is intact")
