"""`dsmctl train --dry-run`: what a recipe builds and roughly what it costs, without training."""
import math
import os

import torch

from .. import data as data_mod
from ..nn.build import build_model, count_parameters


def describe(recipe, shape=None):
    """shape: one example's shape, to describe a recipe whose data is not prepared yet."""
    if shape is None:
        shape = data_mod.open_split(recipe.data.source, recipe.data.train_split, recipe.data.synthetic).shape
    shape = tuple(shape)
    model = build_model(recipe.model, shape)
    n_params = count_parameters(model)
    # Activations: sum of every module's output for one example, measured with hooks on a forward pass;
    # the double backward keeps about three copies (forward, first backward, their graph).
    sizes = []
    hooks = [m.register_forward_hook(lambda m, i, o: sizes.append(o.numel() if torch.is_tensor(o) else 0))
             for m in model.modules() if not list(m.children())]
    with torch.no_grad():
        model(torch.zeros(1, *shape), torch.ones(1), need=("energy",) if recipe.model.kind != "denoiser" else ("grad_y",))
    for h in hooks:
        h.remove()
    per_example = sum(sizes) * 4 * 3
    batch = recipe.train.batch_size
    world = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun / accelerate launch
    if batch % world:
        from .errors import TrainError

        raise TrainError(f"train.batch_size: {batch} is not divisible by the number of processes ({world})")
    memory = n_params * 4 * 4 + per_example * (batch // world)  # weights, grads, two Adam moments
    return {"parameters": n_params, "shape": list(shape), "memory_gib": memory / 2**30,
            "d": math.prod(shape), "world_size": world, "batch_per_process": batch // world}
