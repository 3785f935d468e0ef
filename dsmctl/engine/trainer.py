"""The training loop: one or many processes through Accelerate, everything keyed by the global step.

Data order, flips, noise levels and noise draws are pure functions of (seed, step), so a resumed run
sees exactly the batches an uninterrupted one would, whatever the number of processes.
"""
import json
import time
from pathlib import Path

import numpy as np
import torch

from .. import data as data_mod
from ..checkpoint import save_model
from ..likelihood import normalization_constant
from ..nn.build import build_model, count_parameters
from ..objectives import sample_t, score_matching_loss
from ..rng import hash_seed
from . import checkpoints
from .progress import Progress
from .schedule import lr_factor


class TrainError(RuntimeError):
    pass


class IndexSampler:
    """Global step -> dataset positions of that step's global batch (a fresh permutation each epoch)."""

    def __init__(self, n, batch_size, seed):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self._epoch, self._perm = None, None

    def perm(self, epoch):
        if epoch != self._epoch:
            self._epoch = epoch
            self._perm = np.random.default_rng(hash_seed(self.seed, 7, epoch)).permutation(self.n)
        return self._perm

    def positions(self, step):
        start = step * self.batch_size
        out = []
        while len(out) < self.batch_size:
            epoch, offset = divmod(start + len(out), self.n)
            take = min(self.batch_size - len(out), self.n - offset)
            out.extend(self.perm(epoch)[offset:offset + take])
        return np.asarray(out)


def step_noise(step, seed, batch_size, shape, noise_cfg, hflip, device):
    """(t, z, flip) for the whole global batch of `step`, generated on the device from (seed, step)."""
    g = torch.Generator(device=device).manual_seed(hash_seed(seed, 11, step))
    t = sample_t(batch_size, noise_cfg.t_min, noise_cfg.t_max, generator=g, device=device)
    z = torch.randn(batch_size, *shape, generator=g, device=device)
    flip = torch.rand(batch_size, generator=g, device=device) < 0.5 if hflip else None
    return t, z, flip


def make_accelerator(precision):
    from accelerate import Accelerator

    return Accelerator(mixed_precision="bf16" if precision == "bf16" else "no", cpu=not torch.cuda.is_available())


def build_optimizer(model, optim):
    return torch.optim.Adam(model.parameters(), lr=optim.lr, betas=optim.betas, eps=optim.eps,
                            weight_decay=optim.weight_decay)


def train(recipe, run_dir, resume="auto", command=None, progress=True):
    """Train `recipe` into `run_dir`; returns a summary dict (also written to run_dir/summary.json)."""
    acc = make_accelerator(recipe.train.precision)
    run_dir = Path(run_dir)
    world, rank = acc.num_processes, acc.process_index
    B = recipe.train.batch_size
    if B % world:
        raise TrainError(f"train.batch_size {B} is not divisible by the number of processes ({world})")
    b = B // world

    train_data = data_mod.open_split(recipe.data.source, recipe.data.train_split, recipe.data.synthetic)
    if recipe.data.subset:
        train_data = data_mod.subset(train_data, recipe.data.subset)
    shape = train_data.shape
    if recipe.data.hflip and len(shape) != 3:
        raise TrainError("data.hflip needs image data (C x H x W)")
    model = build_model(recipe.model, shape)
    optimizer = build_optimizer(model, recipe.optim)
    start_step = 0
    if acc.is_main_process:
        checkpoints.init_run_dir(run_dir, recipe, command)
        data_mod.record_subset(run_dir, train_data)  # the chosen indices, for disjointness checks
    acc.wait_for_everyone()
    restored = checkpoints.find_resume(run_dir, resume)
    if restored is not None:
        start_step = checkpoints.load_training_state(restored, model, optimizer)
    model, optimizer = acc.prepare(model, optimizer)
    sampler = IndexSampler(len(train_data), B, recipe.train.seed)
    meta_base = {"recipe": recipe.to_dict(), "shape": list(shape),
                 "data": data_mod.training_data_info(recipe.data, train_data)}

    prog = Progress(recipe.train.steps, start_step, enabled=progress and acc.is_main_process)
    prog.log(f"[train] {run_dir}: {count_parameters(acc.unwrap_model(model)):,} parameters, "
             f"{len(train_data):,} training examples of shape {tuple(shape)}, global batch {B} "
             f"({world} process{'es' if world > 1 else ''} x {b}), device {acc.device}, {recipe.train.precision}, "
             f"random horizontal flips {'on' if recipe.data.hflip else 'off'}")
    if restored is not None:
        prog.log(f"[train] resumed from {restored} at step {start_step} (model, optimizer; data order and noise "
                 f"follow the step)")
    metrics_file = open(run_dir / "metrics.jsonl", "a") if acc.is_main_process else None
    t0, last_t, last_step = time.time(), time.time(), start_step
    sums = {"loss": 0.0, "space": 0.0, "time": 0.0, "n": 0}
    step = start_step
    try:
        for step in range(start_step, recipe.train.steps):
            lr = recipe.optim.lr * lr_factor(step, recipe.optim, recipe.train.steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            pos = sampler.positions(step)[rank * b:(rank + 1) * b]
            t, z, flip = step_noise(step, recipe.train.seed, B, shape, recipe.noise, recipe.data.hflip, acc.device)
            t, z = t[rank * b:(rank + 1) * b], z[rank * b:(rank + 1) * b]
            # Flips are applied to the uint8 rows before the float conversion (data/arrays.py).
            x = train_data.batch(pos, acc.device, flip=None if flip is None else flip[rank * b:(rank + 1) * b])
            with acc.autocast():
                loss, terms = score_matching_loss(model, x, t, z, recipe.loss.mode, recipe.loss.time_weight)
            if not torch.isfinite(loss):
                bad = [k for k, v in terms.items() if not torch.isfinite(v).all()]
                raise TrainError(f"non-finite loss at step {step} in the {' and '.join(bad) or 'loss'} term(s), "
                                 f"t in [{t.min().item():.3g}, {t.max().item():.3g}]")
            acc.backward(loss)
            if recipe.optim.grad_clip:
                acc.clip_grad_norm_(model.parameters(), recipe.optim.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            sums["loss"] += loss.item()
            sums["space"] += terms["space"].mean().item()
            sums["time"] += terms["time"].mean().item()
            sums["n"] += 1
            done = step + 1
            if done % recipe.train.log_every == 0 or done == recipe.train.steps:
                now = time.time()
                rate = (done - last_step) * B / max(now - last_t, 1e-9)
                m = {"step": done, "loss": sums["loss"] / sums["n"], "space": sums["space"] / sums["n"],
                     "time": sums["time"] / sums["n"], "lr": lr, "img_per_s": rate, "elapsed_s": now - t0,
                     "eta_s": (recipe.train.steps - done) * B / max(rate, 1e-9)}
                if metrics_file:
                    metrics_file.write(json.dumps(m) + "\n")
                    metrics_file.flush()
                prog.update(m)
                last_t, last_step = now, done
                sums = {"loss": 0.0, "space": 0.0, "time": 0.0, "n": 0}
            if done % recipe.train.ckpt_every == 0 and done != recipe.train.steps:
                acc.wait_for_everyone()
                if acc.is_main_process:
                    checkpoints.save_checkpoint(run_dir, done, acc.unwrap_model(model), optimizer,
                                                meta_base, recipe.train.keep_last)
        step = recipe.train.steps
    finally:
        prog.close()
        if metrics_file:
            metrics_file.close()

    acc.wait_for_everyone()
    summary = {"run_dir": str(run_dir), "steps": recipe.train.steps, "train_seconds": time.time() - t0}
    if acc.is_main_process:
        net = acc.unwrap_model(model)
        checkpoints.save_checkpoint(run_dir, step, net, optimizer, meta_base, recipe.train.keep_last)
        meta = {**meta_base, "step": step}
        if recipe.model.kind != "denoiser":
            meta["normalization"] = compute_constant(net, recipe, acc.device, prog)
        save_model(run_dir / "model.safetensors", net, meta)
        summary["normalization"] = meta.get("normalization")
        summary["model"] = str(run_dir / "model.safetensors")
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def compute_constant(model, recipe, device, prog=None):
    """The normalization constant on the evaluation split, stored with the exported model."""
    ev = recipe.eval
    data = data_mod.open_split(recipe.data.source, recipe.data.eval_split, recipe.data.synthetic)
    if ev.n_images:
        data = data.subset(np.arange(min(ev.n_images, len(data))))
    model.eval()
    c, se = normalization_constant(model, data, ev.t_max, ev.anchor, ev.batch_size, ev.seed, device)
    if prog:
        prog.log(f"[train] normalization constant c = {c:.6g} +- {se:.2g} nats (anchor {ev.anchor}, "
                 f"t_max {ev.t_max:g}, {len(data)} images of {data.name})")
    return {"constant": c, "stderr": se, "t_max": ev.t_max, "anchor": ev.anchor, "n_images": len(data),
            "seed": ev.seed, "data": data.name, "data_fingerprint": data.fingerprint}
