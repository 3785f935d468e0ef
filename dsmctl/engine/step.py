"""One optimization step: loss with the double backward, collective guard, backward, clip, update, EMA.

grad_y U and grad_t U are taken with respect to the inputs only (EnergyModel re-makes y and t into
leaves), so parameters receive gradient only from loss.backward(), where DDP reduces it. DDP
reduces every parameter's gradient each step; a parameter that never reaches the loss (one that only
shifts the energy by a constant, like the bias of a single-component radial energy) would get none,
and gradient synchronization would break. `unreached_parameters` finds them once with a probe
step, and `train_step` ties them to the loss with weight 0, so they get an exact zero gradient.
"""
import math
from dataclasses import dataclass

import torch

from .objectives import score_matching_loss
from . import guard
from .precision import autocast


def unreached_parameters(model, x, t, z, mode, time_weight, consistency_weight=0.0):
    """Names of the trainable parameters that get no gradient from the loss on a probe batch."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    loss, _ = score_matching_loss(model, x, t, z, mode, time_weight, consistency_weight)
    grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    return [n for (n, _), g in zip(named, grads) if g is None]


@dataclass
class StepResult:
    loss: float = math.nan
    space: float = math.nan
    time: float = math.nan
    grad_norm: float = math.nan
    skipped: str | None = None  # why the update was skipped (non-finite loss terms or gradient)
    stop: bool = False  # a stop signal reached some process: save and exit after this step


def train_step(acc, model, optimizer, x, t, z, recipe, tied=(), ema=None, stop_requested=False):
    """One step on this process's part (x, t, z) of the global batch; every process must call it."""
    with autocast(x.device, recipe.train.precision):
        loss, terms = score_matching_loss(model, x, t, z, recipe.loss.mode, recipe.loss.time_weight,
                                          recipe.loss.consistency_weight)
    verdict = guard.check(acc, loss, terms, t, stop_requested)  # collective: every rank, every step
    if verdict.bad:  # every rank skips backward together, so no one waits in the gradient all-reduce
        optimizer.zero_grad(set_to_none=True)
        return StepResult(skipped=verdict.describe(), stop=verdict.stop)
    if tied:
        loss = loss + 0.0 * sum(p.sum() for p in tied)
    acc.backward(loss)
    params = [p for p in model.parameters() if p.grad is not None]
    if recipe.optim.grad_clip:
        grad_norm = acc.clip_grad_norm_(params, recipe.optim.grad_clip)
    else:
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    grad_norm = float(grad_norm)
    if not math.isfinite(grad_norm):  # gradients are already reduced: every rank sees the same norm
        optimizer.zero_grad(set_to_none=True)
        return StepResult(skipped=f"non-finite gradient (norm {grad_norm})", stop=verdict.stop)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if ema is not None:
        ema.update(acc.unwrap_model(model))
    m = verdict.means  # over the global batch
    return StepResult(m["loss"], m["space"], m["time"], grad_norm, stop=verdict.stop)
