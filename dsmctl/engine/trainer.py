"""The training loop: one or many processes through Accelerate, everything keyed by the global step.

Data order, flips, noise levels and noise draws are pure functions of (seed, step), so a resumed run
sees exactly the batches an uninterrupted one would, whatever the number of processes. The global
batch (train.batch_size) is split evenly across processes; the learning rate is a function of the
global step. Layout of the run directory, resume rules and exit codes: docs/training.md.
"""
import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .. import data as data_mod
from ..fileio import disk_errors
from ..nn.model_file import RAW_FILE, save_model
from ..outputs import DirLock
from ..nn.build import build_model, count_parameters
from .objectives import sample_t
from ..rng import hash_seed

DEQUANT_BIN = 1 / 256  # data.dequantize: the width of an 8-bit bin on [0, 1] (nll/dequantize.py's BIN_WIDTH)
from . import resume as resume_mod, rng_state, train_state
from .dist_eval import normalization_constant
from .ema import EMA
from .dryrun import check_memory
from .errors import DivergedError, TrainError  # noqa: F401  (cli.py imports it from here)
from .guard import SkipCounter, check_finite_weights
from .precision import keep_fp32, set_fp32_precision
from ..progress import TrainProgress
from .schedule import lr_factor
from .signals import StopRequest
from .step import train_step, unreached_parameters


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


def step_noise(step, seed, batch_size, shape, noise_cfg, hflip, device, dequantize=False):
    """(t, z, flip, u) for the whole global batch of `step`, generated on the device from (seed, step).
    u: uniform [0, 1) per pixel for data.dequantize (None when off); drawn last, so that t, z and flips are the
    same with and without it."""
    g = torch.Generator(device=device).manual_seed(hash_seed(seed, 11, step))
    t = sample_t(batch_size, noise_cfg.t_min, noise_cfg.t_max, generator=g, device=device)
    z = torch.randn(batch_size, *shape, generator=g, device=device)
    flip = torch.rand(batch_size, generator=g, device=device) < 0.5 if hflip else None
    u = torch.rand(batch_size, *shape, generator=g, device=device) if dequantize else None
    return t, z, flip, u


# ---- All data access of training is in these two functions. ----

def open_train_data(recipe):
    train_data = data_mod.open_split(recipe.data.source, recipe.data.train_split, recipe.data.synthetic)
    if recipe.data.subset:
        train_data = data_mod.subset(train_data, recipe.data.subset)
    train_data = data_mod.exclude_labels(train_data, recipe.data.exclude_labels)
    shape = train_data.shape
    if recipe.data.hflip and len(shape) != 3:
        raise TrainError("data.hflip needs image data (C x H x W)")
    if recipe.data.dequantize and train_data.quantization_bits != 8:
        raise TrainError(f"data.dequantize: {train_data.name} is continuous data; dequantization needs 8-bit images")
    # The normalization constant is computed on the eval split after training: its shape is checked now.
    eval_data = data_mod.open_split(recipe.data.source, recipe.data.eval_split, recipe.data.synthetic)
    if tuple(eval_data.shape) != tuple(shape):
        raise TrainError(f"{recipe.data.source}: data.eval_split {recipe.data.eval_split!r} has examples of shape "
                         f"{tuple(eval_data.shape)}, data.train_split {recipe.data.train_split!r} "
                         f"{tuple(shape)}; expected one shape")
    return train_data


def local_batch(train_data, sampler, step, recipe, rank, b, device):
    """This process's share (positions rank*b .. (rank+1)*b) of the global batch of `step`: x, t, z."""
    pos = sampler.positions(step)[rank * b:(rank + 1) * b]
    t, z, flip, u = step_noise(step, recipe.train.seed, sampler.batch_size, train_data.shape, recipe.noise,
                               recipe.data.hflip, device, recipe.data.dequantize)
    t, z = t[rank * b:(rank + 1) * b], z[rank * b:(rank + 1) * b]
    # Flips are applied to the uint8 rows before the float conversion (data/arrays.py).
    x = train_data.batch(pos, device, flip=None if flip is None else flip[rank * b:(rank + 1) * b])
    if u is not None:  # the bin of width 1/256 centred on k/255, as the bounds of nll/dequantize.py
        x = x + (u[rank * b:(rank + 1) * b] - 0.5) * DEQUANT_BIN
    return x, t, z


# ---- Setup ----

def check_world(recipe, world):
    B = recipe.train.batch_size
    if B % world:
        raise TrainError(f"train.batch_size: {B} is not divisible by the number of processes ({world}); "
                         f"the global batch is split evenly, use a multiple of {world}")
    if recipe.loss.consistency_weight and (B // world) % 2:
        raise TrainError(f"train.batch_size: {B} gives {B // world} images per process; loss.consistency_weight "
                         f"pairs them, use a multiple of {2 * world}")


def make_accelerator(recipe, run_dir):
    from accelerate import Accelerator

    from ..device import training_device

    kwargs = {"log_with": "tensorboard", "project_dir": str(run_dir)} if recipe.train.tensorboard else {}
    # Precision is the recipe's (train.precision), applied by us: accelerate's own autocast stays off.
    return Accelerator(mixed_precision="no", cpu=training_device().type == "cpu", **kwargs)


def release_processes():
    """End a multi-process training cleanly: every rank meets, then the process group is destroyed. Without this,
    a gloo rank that exits while the group still holds its threads can abort at interpreter exit ("terminate
    called without an active exception", exit -6) after the run has finished. No-op in one process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def build_optimizer(model, optim):
    return torch.optim.Adam(model.parameters(), lr=optim.lr, betas=optim.betas, eps=optim.eps,
                            weight_decay=optim.weight_decay)


def model_meta(recipe, train_data):
    return {"recipe": recipe.to_dict(), "shape": list(train_data.shape),
            "data": data_mod.training_data_info(recipe.data, train_data)}


def train(recipe, run_dir, resume="auto", command=None, progress=True, verify_data="quick"):
    """Train `recipe` into `run_dir`; returns a summary dict (also written to run_dir/summary.json).

    verify_data: how a prepared data.source is re-checked against its manifest first (data.check_prepared):
    quick | full | skip. Nothing is written before it passes.

    A stop signal ends the run early with a checkpoint; the summary then has "stopped" with the exit code.
    A run that fails before its first step (bad data, out of memory, a refused checkpoint) leaves no run
    directory behind when it created it; one that diverges keeps its metrics for diagnosis.
    """
    run_dir = Path(run_dir)
    main = int(os.environ.get("RANK", "0")) == 0
    # One writer per run directory: the main process locks it (all ranks of this training share it); a second
    # `dsmctl train` into it is refused before anything is read or written (outputs.DirLock).
    lock = DirLock(run_dir, "run directory").acquire() if main else None
    fresh = lock is not None and lock.created
    stepped = {"done": False}
    try:
        return _train(recipe, run_dir, resume, command, progress, stepped, verify_data)
    except BaseException as e:
        if fresh and not stepped["done"] and not isinstance(e, DivergedError):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        if lock is not None:
            lock.release()


def _train(recipe, run_dir, resume, command, progress, stepped, verify_data):
    check_world(recipe, int(os.environ.get("WORLD_SIZE", "1")))  # before any process group is formed
    if recipe.train.tensorboard and not any(importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX")):
        raise TrainError("train.tensorboard: true needs the tensorboard package (pip install tensorboard)")
    acc = make_accelerator(recipe, run_dir)
    world, rank = acc.num_processes, acc.process_index
    check_world(recipe, world)
    B, steps = recipe.train.batch_size, recipe.train.steps
    b = B // world
    set_fp32_precision(recipe.train.precision == "tf32")

    data_mod.check_prepared(recipe.data.source, verify_data)  # the fingerprint a model records must be true
    train_data = open_train_data(recipe)
    shape = train_data.shape
    check_memory(recipe, shape, world, acc.device)  # before anything is built: refuse sizes that cannot fit
    torch.manual_seed(hash_seed(recipe.train.seed, 5))  # the same initial weights on every process and run
    model = build_model(recipe.model, shape)
    base_note = None
    if getattr(model, "base", None) is not None:  # model.base gaussian: fitted on the training split
        from ..nll.likelihood import fit_anchor

        # Shrunk (Ledoit-Wolf), so that a base fitted on few examples (generalize with small N) stays a sane
        # density off its training images instead of a near-singular one.
        base = fit_anchor(train_data, shrink=True)
        model.base.set_gaussian(base)
        base_note = (f"[train] Gaussian base fitted on {len(train_data):,} examples, Ledoit-Wolf shrinkage "
                     f"{base.shrinkage:.3g}")
    optimizer = build_optimizer(model, recipe.optim)
    rng_state.seed_all(recipe.train.seed, rank)
    meta = model_meta(recipe, train_data)

    # Resume before writing anything: a refused checkpoint leaves the run directory untouched.
    ckpt, warnings = resume_mod.pick_checkpoint(acc, run_dir, resume)
    start_step, state, ema_weights, restored = 0, {}, None, None
    if ckpt is not None:
        start_step, state, ema_weights, restored = resume_mod.load_state(acc, ckpt, model, optimizer, recipe,
                                                                         len(train_data))
    if acc.is_main_process:
        train_state.init_run_dir(run_dir, recipe, command)
        data_mod.record_subset(run_dir, train_data)  # the chosen indices, for disjointness checks
        train_state.rewind_metrics(run_dir, start_step)
    acc.wait_for_everyone()

    model.to(acc.device)
    probe = train_data.batch(np.arange(min(2, len(train_data))), acc.device)
    probe_t = torch.tensor([recipe.noise.t_min, recipe.noise.t_max], device=acc.device)[:len(probe)]
    probe_z = torch.randn(probe.shape, generator=torch.Generator(acc.device).manual_seed(0), device=acc.device)
    unreached = unreached_parameters(model, probe, probe_t, probe_z, recipe.loss.mode, recipe.loss.time_weight,
                                     recipe.loss.consistency_weight)
    named = dict(model.named_parameters())
    tied = [named[n] for n in unreached]
    fp32_parts = keep_fp32(model) if recipe.train.precision == "bf16" else []
    model, optimizer = acc.prepare(model, optimizer)
    ema = EMA(acc.unwrap_model(model), recipe.train.ema) if recipe.train.ema else None
    if ckpt is not None:
        restored.insert(2, resume_mod.restore_ema(ema, ema_weights, state))
    skips = SkipCounter(recipe.train.max_nonfinite, int(state.get("skipped", 0)))
    sampler = IndexSampler(len(train_data), B, recipe.train.seed)
    if recipe.train.tensorboard:
        acc.init_trackers("tensorboard")

    prog = TrainProgress(steps, start_step, enabled=progress and acc.is_main_process,
                    every_s=recipe.train.progress_every_s)
    prog.log(f"[train] {run_dir}: {count_parameters(acc.unwrap_model(model)):,} parameters, "
             f"{len(train_data):,} training examples of shape {tuple(shape)}, global batch {B} "
             f"({world} process{'es' if world > 1 else ''} x {b}), device {acc.device}, {recipe.train.precision}, "
             f"random horizontal flips {'on' if recipe.data.hflip else 'off'}"
             + (", uniform dequantization in the 8-bit bin" if recipe.data.dequantize else "")
             + (f" (fp32: {', '.join(fp32_parts[:3])}{', ...' if len(fp32_parts) > 3 else ''})" if fp32_parts else ""))

    def notice(line):  # warnings: printed even with --quiet (rank 0 only)
        if prog.enabled:
            prog.log(line)
        elif acc.is_main_process:
            print(line, file=sys.stderr, flush=True)

    for line in warnings:
        notice(line)
    if base_note:
        prog.log(base_note)
    if unreached:
        prog.log(f"[train] {len(unreached)} parameter tensors do not reach the loss ({', '.join(unreached[:4])}"
                 f"{', ...' if len(unreached) > 4 else ''}): tied with weight 0 so that DDP reduces them too")
    if ckpt is not None:
        # with --quiet too when a damaged checkpoint was skipped: say which one it fell back to
        (notice if warnings else prog.log)(f"[train] resumed from {ckpt}: " + "; ".join(restored))
    elif resume == "auto":
        prog.log(f"[train] no complete checkpoint in {run_dir / 'checkpoints'}: fresh start at step 0")

    with disk_errors(run_dir / "metrics.jsonl"):
        metrics_file = open(run_dir / "metrics.jsonl", "a") if acc.is_main_process else None

    def record(m):
        if metrics_file:
            with disk_errors(run_dir / "metrics.jsonl", "(checkpoints are intact; resume with --resume auto)"):
                metrics_file.write(json.dumps(m) + "\n")
                metrics_file.flush()
        if recipe.train.tensorboard and "loss" in m:
            acc.log({k: v for k, v in m.items() if k != "step" and v is not None}, step=m["step"])

    t0, last_t, last_step = time.time(), time.time(), start_step
    sums, done, last_ckpt, stopped = dict(state.get("window", {})), start_step, ckpt, None
    with StopRequest() as stop:
        try:
            for step in range(start_step, steps):
                lr = recipe.optim.lr * lr_factor(step, recipe.optim, steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                x, t, z = local_batch(train_data, sampler, step, recipe, rank, b, acc.device)
                res = train_step(acc, model, optimizer, x, t, z, recipe, tied, ema, stop.requested)
                done = step + 1
                stepped["done"] = True
                prog.tick(done)
                if res.skipped:
                    prog.log(skips.skip(done, res.skipped, last_ckpt))  # raises past train.max_nonfinite
                    record({"step": done, "event": "skipped", "reason": res.skipped, "skipped": skips.skipped})
                else:
                    for k in ("loss", "space", "time", "grad_norm"):
                        sums[k] = sums.get(k, 0.0) + getattr(res, k)
                    sums["n"] = sums.get("n", 0) + 1
                if done % recipe.train.log_every == 0 or done == steps:
                    now = time.time()
                    rate = (done - last_step) * B / max(now - last_t, 1e-9)
                    m = {"step": done, **window_means(sums), "lr": lr, "img_per_s": rate, "elapsed_s": now - t0,
                         "eta_s": (steps - done) * B / max(rate, 1e-9), "skipped": skips.skipped}
                    record(m)
                    prog.update(m)
                    last_t, last_step, sums = now, done, {}
                if res.stop or (done % recipe.train.ckpt_every == 0 and done < steps):
                    check_finite_weights(model, done, last_ckpt)
                    last_ckpt = resume_mod.save(acc, run_dir, done, model, optimizer, ema, skips.skipped, sums,
                                                recipe, meta)
                if res.stop:
                    stopped = {"signal": stop.name or "signal on another process", "step": done,
                               "exit_code": stop.exit_code, "checkpoint": str(last_ckpt)}
                    prog.log(f"[train] {stopped['signal']}: saved {last_ckpt} at step {done}; "
                             f"continue with --resume auto")
                    break
        finally:
            prog.close()
            if metrics_file:
                metrics_file.close()
            if recipe.train.tensorboard:
                acc.end_training()

    summary = {"run_dir": str(run_dir), "steps": done, "world_size": world, "rank": rank,
               "skipped_steps": skips.skipped, "train_seconds": time.time() - t0}
    if stopped:
        return {**summary, "stopped": stopped}
    if done != start_step or not (run_dir / "checkpoints" / f"step-{done:07d}").is_dir():
        check_finite_weights(model, done, last_ckpt)
        last_ckpt = resume_mod.save(acc, run_dir, done, model, optimizer, ema, skips.skipped, sums, recipe, meta)
    summary.update(export(acc, model, ema, recipe, meta, run_dir, done, shape, prog))
    summary["checkpoint"] = str(last_ckpt)
    if acc.is_main_process:
        train_state.write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def window_means(sums):
    """Means of the logged quantities over the non-skipped steps of a log window (None if all were skipped)."""
    n = sums.get("n", 0)
    return {k: sums[k] / n if n else None for k in ("loss", "space", "time", "grad_norm")}


def export(acc, model, ema, recipe, meta, run_dir, step, shape, prog):
    """model.safetensors (EMA weights when EMA is on, else raw) + model-raw.safetensors when EMA is on, each
    with its own normalization constant computed by all processes on shards of the evaluation split."""
    net = acc.unwrap_model(model).eval()
    exports = [("raw", net, run_dir / RAW_FILE if ema else run_dir / "model.safetensors")]
    if ema:
        ema_net = build_model(recipe.model, shape).to(acc.device).eval()
        ema_net.load_state_dict(ema.state_dict(net))
        exports.insert(0, ("ema", ema_net, run_dir / "model.safetensors"))
    out = {}
    for weights, module, path in exports:
        m = {**meta, "step": step, "weights": weights}
        if ema:
            m["ema"] = ema.info()
        if recipe.model.kind != "denoiser":
            m["normalization"] = compute_constant(acc, module, recipe, prog, weights)
        if acc.is_main_process:
            save_model(path, module, m)
        acc.wait_for_everyone()
        if path.name == "model.safetensors":
            out.update(model=str(path), weights=weights, normalization=m.get("normalization"))
        else:
            out["model_raw"] = str(path)
    return out


def compute_constant(acc, model, recipe, prog=None, weights="raw"):
    """The normalization constant on the evaluation split, stored with the exported model."""
    ev = recipe.eval
    data = data_mod.open_split(recipe.data.source, recipe.data.eval_split, recipe.data.synthetic)
    data = data_mod.exclude_labels(data, recipe.data.exclude_labels)
    if ev.n_images:
        data = data.subset(np.arange(min(ev.n_images, len(data))))
    c, se = normalization_constant(acc, model, data, ev.t_max, ev.anchor, ev.batch_size, ev.seed)
    if not np.isfinite(c):  # a model file never stores a non-finite constant (model_file.check_meta refuses it)
        if prog:
            prog.log(f"[train] warning: the normalization constant ({weights} weights) came out {c}; none is stored "
                     f"(eval-nll computes it afresh)")
        return None
    if prog:
        prog.log(f"[train] normalization constant ({weights} weights) c = {c:.6g} +- {se:.2g} nats (anchor "
                 f"{ev.anchor}, t_max {ev.t_max:g}, {len(data)} images of {data.name})")
    return {"constant": c, "stderr": se, "t_max": ev.t_max, "anchor": ev.anchor, "n_images": len(data),
            "seed": ev.seed, "data": data.name, "data_fingerprint": data.fingerprint}
