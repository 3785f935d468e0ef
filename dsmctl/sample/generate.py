"""`dsmctl sample`: load a model, draw one sample per seed, write PNGs / grid / npz, measure log p.

Several processes (torchrun, or --shard RANK/WORLD by hand) each take every WORLD-th seed, write their
seeds' PNGs and a shard file; the grid, samples.npz and stats.json come from merging the shards, done by
rank 0 under torchrun (it waits for the other shards) or by `dsmctl sample CKPT --out DIR --merge`.
A seed's image does not depend on how seeds were split: each sample draws from its own generators.
"""
import hashlib
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from .. import data as data_mod
from .. import units
from . import files as sample_files
from ..nn.model_file import load_model, resolve_model_path
from ..device import resolve_device
from ..fileio import clean_stale_temporaries, write_json
from .samplers import SamplerConfig, sample


def parse_shard(shard=None):
    """(rank, world, from_env): --shard 'R/W', else torchrun's RANK / WORLD_SIZE, else (0, 1)."""
    if shard:
        try:
            rank, world = (int(v) for v in shard.split("/"))
        except ValueError:
            raise ValueError(f"--shard {shard!r}: expected RANK/WORLD, e.g. 0/4") from None
        if not 0 <= rank < world:
            raise ValueError(f"--shard {shard!r}: expected 0 <= RANK < WORLD")
        return rank, world, False
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, world > 1


def default_config(meta, **overrides):
    """Sampler settings: the recipe's noise range unless overridden (t_min floored at 1e-5, i.e. sigma of
    0.8/255: smaller levels cost steps and change nothing visible in 8-bit images); 30 levels for mala/ula."""
    noise = meta["recipe"]["noise"]
    base = {"t_max": noise["t_max"], "t_min": max(noise["t_min"], 1e-5)}
    base.update({k: v for k, v in overrides.items() if v is not None})
    if overrides.get("steps") is None and base.get("sampler") in ("mala", "ula"):
        base["steps"] = 30  # noise levels, each with langevin_steps steps
    return SamplerConfig(**base).check()


def data_start(meta, max_images=10_000):
    """(mean image, mean per-dim variance) of the model's training data (first max_images), or None when
    that data cannot be opened here. The start N(m, (t_max + v) I) is then centred where the data are."""
    rec = meta["recipe"]["data"]
    try:
        data = data_mod.open_split(rec["source"], rec["train_split"], rec.get("synthetic"))
    except (data_mod.DataError, OSError, ValueError):
        return None
    if tuple(data.shape) != tuple(meta["shape"]):
        return None
    n = min(len(data), max_images)
    total, total_sq = 0.0, 0.0
    for _, x in data.batches(1024, dtype=torch.float64, positions=np.arange(n)):
        total, total_sq = total + x.sum(0), total_sq + x.square().sum(0)
    mean = total / n
    return mean.float(), float((total_sq / n - mean.square()).mean())


def signature(model_path, meta, cfg, seeds, dtype):
    key = {"model": str(Path(model_path).resolve()), "step": meta.get("step"), "config": cfg.to_dict(),
           "seeds": list(seeds), "dtype": str(dtype)}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


@torch.no_grad()
def quantize(x, shape):
    """What is written: 8-bit images are rounded to k/255 (log p is measured on them); vectors as is."""
    return torch.round(x * 255) / 255 if sample_files.is_image_shape(shape) else x


def sample_energies(model, x, t, constant, batch_size, device):
    """Normalized energies U(x, t) + c of the samples (nats per image), x at noise level t (usually 0)."""
    out = []
    for i in range(0, len(x), batch_size):
        out.append(model(x[i:i + batch_size].to(device), t, need=("energy",)).energy.double().cpu() + constant)
    return torch.cat(out)


def sampler_setup(meta, name, **config):
    """(SamplerConfig, start (m, v) or None, note or None) for a model: `dsmctl sample`'s defaults and checks,
    shared with the Python API. name: the model's path, for messages. config: SamplerConfig fields (None = default;
    init defaults to "data", as the command's --init)."""
    kind = meta["recipe"]["model"]["kind"]
    cfg = default_config(meta, **{**config, "init": config.get("init") or "data"})
    if kind == "denoiser" and cfg.sampler == "mala":
        raise ValueError(f"{name}: a denoiser (score-network) model has no energy: mala needs U for its "
                         "accept/reject test; use ode, sde, ascent or ula")
    if kind == "denoiser" and cfg.sampler == "ascent" and cfg.noise_estimate == "time-score":
        raise ValueError(f"{name}: a denoiser (score-network) model has no time score; use --noise-estimate "
                         "schedule or residual")
    start, init_note = None, None
    if cfg.init == "data":
        start = data_start(meta)
        if start is None:
            cfg.init = "model"
            init_note = f"training data {meta['recipe']['data']['source']} not found: start estimated by the model"
    return cfg, start, init_note


def sample_checkpoint(request, progress=None, merge_timeout=3600.0, dtype=torch.float32):
    """Sample a SampleRequest's seeds (sample/request.py, checked) from its model into request.out; returns the run
    summary (rank 0 / single process) or this shard's summary."""
    ckpt, seeds, batch_size, grid_n = request.model, request.seed_list(), request.batch_size, request.grid
    device = resolve_device(request.device)
    model_path = resolve_model_path(ckpt)
    model, meta = load_model(model_path, device)
    shape = tuple(meta["shape"])
    cfg, start, init_note = sampler_setup(meta, ckpt, **request.sampler_options())
    rank, world, from_env = parse_shard(request.shard)
    sig = signature(model_path, meta, cfg, seeds, dtype)
    my_seeds = seeds[rank::world]
    out_dir = Path(request.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if rank == 0:  # temporaries of a killed earlier run (.samples.npz.tmp-PID.npz, ...), their PID gone
        clean_stale_temporaries(out_dir)
    image = sample_files.is_image_shape(shape)
    norm = meta.get("normalization")
    t_eval = meta["recipe"]["eval"]["t"]
    energies = []

    def on_batch(chunk, part):
        x = quantize(part["x"], shape)
        if image:
            for s, img in zip(chunk, sample_files.to_uint8(x.numpy())):
                sample_files.write_png(sample_files.seed_png(out_dir, s), img)
        if norm:
            energies.append(sample_energies(model, x, t_eval, norm["constant"], batch_size, device))

    t0 = time.time()
    out = sample(model, my_seeds, shape, cfg, batch_size, device, dtype, clip=image, progress=progress,
                 on_batch=on_batch, start=start) if my_seeds else None
    seconds = time.time() - t0
    extras = {k: out[k].numpy() for k in ("accept", "iterations") if out is not None and k in out}
    if energies:
        extras["energy"] = torch.cat(energies).numpy()
    x = quantize(out["x"], shape).numpy() if out is not None else np.zeros((0, *shape), np.float32)
    start = out["start"] if out is not None else (start or (torch.zeros(shape), 0.0))
    info = {"model": str(model_path), "step": meta.get("step"), "shape": list(shape), "config": cfg.to_dict(),
            "ts": out["ts"].tolist() if out is not None else [], "signature": sig, "device": str(device),
            "dtype": str(dtype).replace("torch.", ""), "batch_size": batch_size,
            "start": {"init": cfg.init, "mean_pixel": float(start[0].double().mean()),
                      "extra_variance": float(start[1]), **({"note": init_note} if init_note else {})},
            "log_p_protocol": log_p_protocol(norm, t_eval, image)}
    if world == 1:
        return finish(out_dir, seeds, x, extras, shape, info, grid_n, seconds, shard=None)
    sample_files.write_shard(out_dir, rank, world, sig, my_seeds, x, extras)
    write_json(out_dir / f"shard-{rank:03d}-of-{world:03d}.json", {**info, "seconds": seconds})
    if not (from_env and rank == 0):
        return {**info, "shard": f"{rank}/{world}", "n": len(my_seeds), "seconds": seconds,
                "files": [str(sample_files.shard_path(out_dir, rank, world))], "merged": False}
    wait_for_shards(out_dir, world, merge_timeout)
    return merge(out_dir, world, info, grid_n, seconds)


def wait_for_shards(out_dir, world, timeout):
    deadline = time.time() + timeout
    while not all(sample_files.shard_path(out_dir, r, world).is_file() for r in range(world)):
        if time.time() > deadline:
            raise ValueError(f"{out_dir}: shards still missing after {timeout:.0f} s; run the missing ranks, "
                             "then `dsmctl sample CKPT --out DIR --merge`")
        time.sleep(2.0)


def merge(out_dir, world, info, grid_n=64, seconds=None):
    """Assemble the shards of a split run into samples.npz, grid.png and stats.json."""
    merged = sample_files.read_shards(out_dir, world, info["signature"])
    order = np.argsort(merged["seeds"], kind="stable")
    merged = {k: v[order] for k, v in merged.items()}
    seeds, x = merged.pop("seeds"), merged.pop("x")
    return finish(out_dir, seeds.tolist(), x, merged, tuple(info["shape"]), info, grid_n, seconds, shard=world)


def merge_dir(ckpt, out_dir, grid_n=64):
    """`--merge`: find the shards in out_dir and merge them (their signature must agree)."""
    out_dir = Path(out_dir)
    infos = sorted(out_dir.glob("shard-*-of-*.json"))
    if not infos:
        raise ValueError(f"{out_dir}: no shard-*-of-*.json files to merge")
    info = json.loads(infos[0].read_text())
    if Path(info["model"]).resolve() != resolve_model_path(ckpt).resolve():
        raise ValueError(f"{out_dir}: shards were sampled from {info['model']}, not {ckpt}")
    world = int(infos[0].name.split("-of-")[1].split(".")[0])
    info.pop("seconds", None)
    return merge(out_dir, world, info, grid_n)


def finish(out_dir, seeds, x, extras, shape, info, grid_n, seconds, shard):
    files = sample_files.write_outputs(out_dir, seeds, x, shape, grid_n, energy=extras.get("energy"))
    if sample_files.is_image_shape(shape):
        files.insert(0, f"{Path(out_dir) / 'seed-NNNNNN.png'} ({len(seeds)} files)")
    summary = {**info, "n": len(seeds), "seeds": compact_seeds(seeds), "out": str(out_dir), "files": files,
               "seconds": seconds, "merged_shards": shard}
    d = math.prod(shape)
    ts = info["ts"]
    if "accept" in extras:
        acc = np.asarray(extras["accept"])
        summary["acceptance"] = {"per_level": [{"t": t, "accept": float(a)} for t, a in zip(ts, acc.mean(0))],
                                 "mean": float(acc.mean())}
    if "iterations" in extras:
        it = np.asarray(extras["iterations"])
        summary["iterations"] = {"mean": float(it.mean()), "max": int(it.max())}
    if "energy" in extras:
        e = np.asarray(extras["energy"], dtype=np.float64)
        se = float(e.std(ddof=1) / math.sqrt(len(e))) if len(e) > 1 else float("nan")
        summary["log_p"] = {"db_per_dim": units.log_p_db_per_dim(float(e.mean()), d),
                            "db_per_dim_stderr": units.nats_to_db(se) / d,
                            "nats_per_dim": -units.nats_per_dim(float(e.mean()), d)}
    write_json(Path(out_dir) / "stats.json", summary)
    return summary


def log_p_protocol(norm, t_eval, image):
    if not norm:
        return None
    what = "the written 8-bit samples (k/255)" if image else "the samples"
    return (f"log p = -(U(x, t={t_eval:g}) + c) of {what}, constant c={norm['constant']:.6g} stored at the end of "
            f"training ({norm['anchor']} anchor, t_max={norm['t_max']:g}, {norm['n_images']} images of {norm['data']}); "
            "density only, no +8 bits of quantization")


def compact_seeds(seeds):
    """[0, 1, 2, 3, 7] -> '0-3,7'."""
    seeds = sorted(int(s) for s in seeds)
    runs, start = [], None
    for i, s in enumerate(seeds):
        if start is None:
            start = s
        if i + 1 == len(seeds) or seeds[i + 1] != s + 1:
            runs.append(f"{start}-{s}" if s != start else f"{s}")
            start = None
    return ",".join(runs)
