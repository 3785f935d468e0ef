"""Distributed checks, run by tests/test_distributed.py under `torchrun --nproc_per_node 2` (gloo, CPU) and
in-process with one process; each process writes its results to OUT/rank{R}.* for the test to compare.

1. a step whose global batch has a NaN image in rank 1's share: every rank skips it together;
2. the reduced gradients of the next step (UNet energy, dual loss) on every rank;
3. the same for a radial energy plus a learnable constant, a parameter that never reaches the loss
   (it only shifts the energy): tied with weight 0, it must not break DDP gradient synchronization;
4. the sharded normalization constant and the indices it covered (37 images: shards of 19 and 18);
5. the gathered RNG states;
6. what the tie prevents: the same radial model without it (gradients left unsynchronized, then a DDP error).
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from dsmctl.engine import dist_eval, rng_state, trainer
from dsmctl.engine.step import train_step, unreached_parameters
from dsmctl.nn.build import build_model
from dsmctl.nn.radial import RadialEnergy
from dsmctl.recipe import load_recipe
from dsmctl.rng import hash_seed

UNET = {"data": {"source": "demo"}, "model": {"widths": [8, 16], "mid_width": 16, "layers_per_block": 2,
                                              "embedding": "logt"},
        "noise": {"t_min": 1e-4, "t_max": 10.0}, "train": {"batch_size": 8, "seed": 3},
        "eval": {"t_max": 10.0, "batch_size": 5}}
RADIAL = {"data": {"source": "synthetic", "synthetic": {"kind": "gsm", "d": 16, "n_train": 64, "n_test": 16}},
          "model": {"kind": "radial", "radial_components": 1, "radial_hidden": 16, "radial_depth": 2},
          "noise": {"t_min": 1e-2, "t_max": 1e2}, "loss": {"mode": "single"}, "train": {"batch_size": 8}}


class OffsetRadial(RadialEnergy):
    """A radial energy plus a learnable constant, which reaches neither grad_y U nor grad_t U."""

    def __init__(self, d):
        super().__init__(d, components=1, hidden=16, depth=2)
        self.offset = torch.nn.Parameter(torch.zeros(()))

    def energy(self, y, t):
        return super().energy(y, t) + self.offset


class GradRecorder:
    """Stands in for the optimizer: keeps the (already reduced) gradients instead of stepping."""

    def __init__(self, net):
        self.net, self.param_groups, self.grads = net, [{}], None

    def zero_grad(self, set_to_none=True):
        for p in self.net.parameters():
            p.grad = None

    def step(self):
        self.grads = {n: p.grad.detach().cpu().clone() for n, p in self.net.named_parameters() if p.grad is not None}


def setup(acc, raw, offset=False):
    recipe = load_recipe(raw=raw)
    data = trainer.open_train_data(recipe)
    torch.manual_seed(hash_seed(recipe.train.seed, 5))
    net = (OffsetRadial(data.d) if offset else build_model(recipe.model, data.shape)).to(acc.device)
    probe = data.batch(np.arange(2), acc.device)
    names = unreached_parameters(net, probe, torch.tensor([1e-2, 1.0]), torch.ones_like(probe), recipe.loss.mode,
                                 recipe.loss.time_weight)
    tied = [dict(net.named_parameters())[n] for n in names]
    model = acc.prepare(net)
    sampler = trainer.IndexSampler(len(data), recipe.train.batch_size, recipe.train.seed)
    return recipe, data, net, model, sampler, names, tied


def build_reference_model():
    """The UNet of the checks, as initialized (GradRecorder never changes it)."""
    recipe = load_recipe(raw=UNET)
    torch.manual_seed(hash_seed(recipe.train.seed, 5))
    return build_model(recipe.model, trainer.open_train_data(recipe).shape)


def run(out):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = load_recipe(raw=UNET)
    acc = trainer.make_accelerator(recipe, out)
    rank, world = acc.process_index, acc.num_processes
    result = {"world": world, "rank": rank}
    tensors = {}

    recipe, data, net, model, sampler, _, tied = setup(acc, UNET)
    b = recipe.train.batch_size // world
    rec = GradRecorder(net)
    x, t, z = trainer.local_batch(data, sampler, 2, recipe, rank, b, acc.device)
    global_nan = recipe.train.batch_size // 2  # first image of rank 1's share when world = 2
    if rank * b <= global_nan < (rank + 1) * b:
        x[global_nan - rank * b] = float("nan")
    res = train_step(acc, model, rec, x, t, z, recipe, tied)
    result["skip_reason"] = res.skipped
    result["recorded_after_skip"] = rec.grads is not None
    x, t, z = trainer.local_batch(data, sampler, 3, recipe, rank, b, acc.device)
    res = train_step(acc, model, rec, x, t, z, recipe, tied)
    result["loss"] = res.loss
    tensors.update({f"unet.{k}": v for k, v in rec.grads.items()})

    recipe_r, data_r, net_r, model_r, sampler_r, names, tied = setup(acc, RADIAL, offset=True)
    rec = GradRecorder(net_r)
    for step in range(2):  # a second step fails under DDP if the first left a parameter unreduced
        x, t, z = trainer.local_batch(data_r, sampler_r, step, recipe_r, rank, b, acc.device)
        train_step(acc, model_r, rec, x, t, z, recipe_r, tied)
    result["radial_unreached"] = names
    tensors.update({f"radial.{k}": v for k, v in rec.grads.items()})

    ev = trainer.data_mod.open_split("demo", "test").subset(np.arange(37))
    c, se = dist_eval.normalization_constant(acc, net, ev, 10.0, "gaussian", 5, 0)
    result["constant"] = [c, se]
    result["constant_paper"] = list(dist_eval.normalization_constant(acc, net, ev, 10.0, "paper", 5, 0))
    part = dist_eval.shard(len(ev), rank, world)
    idx, (vals,) = dist_eval.gather_per_image(acc, len(ev), ev.index(part), torch.as_tensor(part) * 2.0)
    result["gathered_indices"] = idx.tolist()
    result["gathered_values_ok"] = bool((vals == idx * 2.0).all())
    rng_state.seed_all(0, rank)
    rng = rng_state.gather_all(acc)
    result["rng_rows"] = int(rng["torch"].shape[0])
    result["rng_rows_distinct"] = bool(world == 1 or not torch.equal(rng["torch"][0], rng["torch"][1]))
    _, data_u, net_u, model_u, sampler_u, _, _ = setup(acc, RADIAL, offset=True)
    rec, result["untied_errors"] = GradRecorder(net_u), []
    for step in range(2):
        x, t, z = trainer.local_batch(data_u, sampler_u, step, recipe_r, rank, b, acc.device)
        try:
            train_step(acc, model_u, rec, x, t, z, recipe_r, tied=())
            tensors[f"untied{step}.net.0.weight"] = rec.grads["net.0.weight"]
        except RuntimeError as e:
            result["untied_errors"].append(str(e).splitlines()[0][:100])
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / f"rank{rank}.safetensors"))
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    acc.wait_for_everyone()


if __name__ == "__main__":
    run(sys.argv[1])
