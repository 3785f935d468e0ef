"""Files written by `dsmctl sample`: per-seed PNGs, a grid, an .npz for FID tools, per-process shards.

Layout of the output directory:
  seed-000042.png        one PNG per seed (images only), 8-bit, written as soon as its batch is done
  grid.png               the first samples side by side (images only)
  samples.npz            images:  arr_0 = uint8 N x H x W x C (the key FID tools read), seeds = int64 N
                         vectors: samples = float32 N x D, seeds = int64 N
                         both:    energy = float64 N, normalized U + c in nats (models with a stored constant)
  shard-RRR-of-WWW.npz   one per process when sampling is split (--shard or torchrun); merged into the above
  stats.json             the sampler settings, protocol and measured numbers (also printed with --json)
The human report on stderr is summary_lines(stats).
Every file is written to a temporary name and renamed, so an interrupted run never leaves a torn file.
"""
import math
from pathlib import Path

import numpy as np

from ..fileio import atomic_path
from ..recipe_yaml import show


def seed_ranges(text):
    """'0-63', '5', '0-9,100,200-203' -> [(first, last), ...] inclusive, in the order given, without expanding
    them (so that a range of a trillion seeds costs nothing to check); refuses overlaps and negative seeds."""
    ranges = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            a, b = (int(v) for v in part.split("-", 1)) if "-" in part[1:] else (int(part), int(part))
            if b < a or a < 0 or b >= 2 ** 63:
                raise ValueError
        except ValueError:
            raise ValueError(f"--seeds {show(text)}: expected seeds like 0-63 or 0,5,10-19 (non-negative, ascending "
                             "ranges)") from None
        ranges.append((a, b))
    ordered = sorted(ranges)
    if any(b0 >= a1 for (_, b0), (a1, _) in zip(ordered, ordered[1:])):
        raise ValueError(f"--seeds {show(text)}: seeds must be non-negative and distinct")
    return ranges


def count_seeds(ranges):
    return sum(b - a + 1 for a, b in ranges)


def parse_seeds(text):
    """'0-63', '5', '0-9,100,200-203' -> a list of distinct non-negative ints, in the order given."""
    seeds = []
    for a, b in seed_ranges(text):
        seeds.extend(range(a, b + 1))
    return seeds


def to_uint8(x):
    """Float images N x C x H x W in [0, 1] -> uint8 N x H x W x C (rounded)."""
    x = np.asarray(x, dtype=np.float64)
    return np.clip(np.rint(x * 255), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def is_image_shape(shape):
    return len(shape) == 3 and shape[0] in (1, 3, 4)


def write_png(path, img):
    """img: uint8 H x W x C with C in (1, 3, 4)."""
    from PIL import Image

    path = Path(path)
    img = img[..., 0] if img.shape[-1] == 1 else img
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(img)).save(tmp, format="PNG")


def write_npz(path, **arrays):
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def seed_png(out_dir, seed):
    return Path(out_dir) / f"seed-{seed:06d}.png"


def grid(images, ncol=None, pad=1, min_size=256):
    """uint8 N x H x W x C -> one uint8 image: ncol columns (default ~sqrt(N)), a `pad`-pixel white gap,
    and a nearest-neighbour upscale by an integer factor so tiny images stay visible (>= min_size px wide)."""
    n, h, w, c = images.shape
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    out = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, q = divmod(i, ncol)
        out[pad + r * (h + pad):pad + r * (h + pad) + h, pad + q * (w + pad):pad + q * (w + pad) + w] = img
    scale = max(1, math.ceil(min_size / out.shape[1]))
    return out.repeat(scale, 0).repeat(scale, 1) if scale > 1 else out


def shard_path(out_dir, rank, world):
    return Path(out_dir) / f"shard-{rank:03d}-of-{world:03d}.npz"


def write_shard(out_dir, rank, world, signature, seeds, x, extras):
    arrays = {"seeds": np.asarray(seeds, dtype=np.int64), "x": np.asarray(x, dtype=np.float32),
              "signature": np.array(signature)}
    arrays.update({k: np.asarray(v) for k, v in extras.items()})
    write_npz(shard_path(out_dir, rank, world), **arrays)


def read_shards(out_dir, world, signature):
    """Concatenate the `world` shards of one run (checked by signature), in the order of their seeds."""
    parts = []
    for rank in range(world):
        path = shard_path(out_dir, rank, world)
        if not path.is_file():
            raise ValueError(f"{path}: missing (shard {rank} of {world} has not finished or was never run)")
        with np.load(path) as z:
            if str(z["signature"]) != signature:
                raise ValueError(f"{path}: written by a different sampling run (other checkpoint, settings or "
                                 "seeds); rerun that shard or use another --out")
            parts.append({k: z[k] for k in z.files if k != "signature"})
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return merged


def write_outputs(out_dir, seeds, x, shape, grid_n=64, energy=None):
    """samples.npz (+ grid.png of the first grid_n for images); returns the list of files written.
    energy (optional, float64 N): normalized energies of the samples, stored under the key `energy`."""
    out_dir = Path(out_dir)
    extra = {"seeds": np.asarray(seeds, dtype=np.int64)}
    if energy is not None:
        extra["energy"] = np.asarray(energy, dtype=np.float64)
    if is_image_shape(shape):
        imgs = to_uint8(x)
        write_npz(out_dir / "samples.npz", arr_0=imgs, **extra)
        write_png(out_dir / "grid.png", grid(imgs[:grid_n]))
        return [str(out_dir / "samples.npz"), str(out_dir / "grid.png")]
    write_npz(out_dir / "samples.npz", samples=np.asarray(x, dtype=np.float32).reshape(len(x), -1), **extra)
    return [str(out_dir / "samples.npz")]


def summary_lines(res):
    """Human-readable report of a sampling result: [(text, style or None)], for the CLI to print."""
    cfg = res["config"]
    how = {"ode": f"ode/{cfg['solver']}, {cfg['steps']} steps", "sde": f"sde/{cfg['solver']}, {cfg['steps']} steps",
           "ascent": f"ascent (h {cfg['h0']:g} {cfg['h_schedule']}, beta {cfg['beta']:g}, noise level from "
                     f"{cfg['noise_estimate']})",
           "mala": f"mala, {cfg['steps']} levels x {cfg['langevin_steps']} steps, eps = {cfg['step_scale']:g} t",
           "ula": f"ula, {cfg['steps']} levels x {cfg['langevin_steps']} steps, eps = {cfg['step_scale']:g} t"}
    secs = f" in {res['seconds']:.1f} s" if res.get("seconds") is not None else ""
    where = f"shard {res['shard']}: " if "shard" in res else ""
    out = [(f"[sample] {where}{res['n']} samples of {res['model']} (step {res['step']}) with {how[cfg['sampler']]}, "
            f"t {cfg['t_max']:g} -> {cfg['t_min']:g} ({cfg['schedule']} schedule){secs}", "bold")]
    st = res["start"]
    out.append((f"  start N(m, (t_max + v) I) from the {st['init']}: mean pixel {st['mean_pixel']:.3f}, "
                f"v {st['extra_variance']:.3g}" + (f" ({st['note']})" if "note" in st else ""), None))
    if "acceptance" in res:
        levels = res["acceptance"]["per_level"]
        out.append((f"  MH acceptance: mean {res['acceptance']['mean']:.3f}; per level (t: rate) "
                    + ", ".join(f"{lv['t']:.3g}: {lv['accept']:.2f}" for lv in levels), None))
    if "iterations" in res:
        out.append((f"  ascent iterations: mean {res['iterations']['mean']:.0f}, max {res['iterations']['max']}", None))
    if "log_p" in res:
        lp = res["log_p"]
        out.append((f"  sample log p {lp['db_per_dim']:.3f} ± {lp['db_per_dim_stderr']:.3f} dB/dim "
                    f"({lp['nats_per_dim']:.4f} nats/dim); {res['log_p_protocol']}", None))
    out += [(f"  wrote {f}", None) for f in res["files"]]
    return out
