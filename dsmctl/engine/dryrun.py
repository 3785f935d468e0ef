"""`dsmctl train --dry-run`: what a recipe builds and roughly what it costs, without training; and the memory
check that refuses, before anything is built or written, a recipe whose sizes cannot fit (train and --dry-run)."""
import math
import os

from .. import data as data_mod
from ..budget import need_memory
from ..device import training_device
from ..nn.build import check_shape
from ..nn.size import model_size
from .errors import TrainError

BYTES = 4  # float32
# Training keeps about three copies of the activations (forward, first backward, their graph: the loss
# differentiates the network twice); weights, gradients and two Adam moments are four copies of the weights.
TRAIN_COPIES, STATE_COPIES = 3, 4


def estimate(recipe, shape, world=1):
    """Bytes per process: weights + optimizer state, a training step, the normalization constant's batches."""
    if recipe.train.batch_size % world:
        raise TrainError(f"train.batch_size: {recipe.train.batch_size} is not divisible by the number of processes "
                         f"({world})")
    params, acts = model_size(recipe.model, shape)
    weights = params * BYTES * (STATE_COPIES + (1 if recipe.train.ema else 0))
    return {"parameters": params, "activations_per_example": acts, "weights_bytes": weights,
            "train_bytes": weights + acts * BYTES * TRAIN_COPIES * (recipe.train.batch_size // world),
            "eval_bytes": params * BYTES + acts * BYTES * recipe.eval.batch_size}


def check_memory(recipe, shape, world=1, device=None):
    """Refuse (BudgetError naming the recipe key and the estimate) sizes that this machine cannot hold."""
    check_shape(recipe.model, shape)
    est = estimate(recipe, shape, world)
    device = training_device() if device is None else device
    m = recipe.model
    size_key = (f"model.radial_hidden {m.radial_hidden}" if m.kind == "radial" else
                f"model.widths {list(m.widths)} (model.mid_width {m.mid_width})")
    need_memory(est["weights_bytes"], size_key, device,
                f"for {est['parameters']:.3g} parameters with their gradients and Adam moments")
    need_memory(est["train_bytes"], f"train.batch_size {recipe.train.batch_size}", device,
                f"of training memory per process ({recipe.train.batch_size // world} examples of shape "
                f"{tuple(shape)})")
    need_memory(est["eval_bytes"], f"eval.batch_size {recipe.eval.batch_size}", device,
                "to compute the normalization constant")
    return est


def describe(recipe, shape=None):
    """shape: one example's shape, to describe a recipe whose data is not prepared yet."""
    if shape is None:
        shape = data_mod.open_split(recipe.data.source, recipe.data.train_split, recipe.data.synthetic).shape
    shape = tuple(shape)
    world = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun / accelerate launch
    est = check_memory(recipe, shape, world)
    return {"parameters": est["parameters"], "shape": list(shape), "memory_gib": est["train_bytes"] / 2**30,
            "eval_memory_gib": est["eval_bytes"] / 2**30, "d": math.prod(shape), "world_size": world,
            "batch_per_process": recipe.train.batch_size // world}
