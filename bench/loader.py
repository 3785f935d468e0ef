"""Loader benchmark: float batches from a memory-mapped uint8 cache, random indices + random flips.

This is the training access pattern (dsmctl/engine/trainer.py): each step draws a global batch of
positions from a per-epoch permutation, gathers those uint8 rows from the prepared cache (sorted
reads), mirrors a random half left-right on uint8, and converts to float32 in [0, 1].

  python bench/loader.py                       # synthetic 64x64x3 cache of 50,000 images in a temp dir
  python bench/loader.py --cache data/imagenet64 --split train
  python bench/loader.py --no-append           # print only; by default a row is appended to bench/RESULTS.md

Uses at most 2 CPU cores (sched_setaffinity + torch.set_num_threads(2)). The page cache is warmed
first: the figure is for a cache that fits in RAM (a cold disk adds its own random-read latency).
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import cpu_name  # noqa: E402
from bench.prefetch import Prefetch, random_flips  # noqa: E402
from dsmctl.data.cache import load_split  # noqa: E402
from dsmctl.data.writer import write_prepared  # noqa: E402
from dsmctl.engine.trainer import IndexSampler  # noqa: E402


def make_cache(n, side, root):
    out = Path(root) / "bench-cache"
    rng = np.random.default_rng(0)
    x = np.empty((n, 3, side, side), dtype=np.uint8)
    for s in range(0, n, 10_000):
        x[s:s + 10_000] = rng.integers(0, 256, (min(10_000, n - s), 3, side, side), dtype=np.uint8)
    write_prepared(out, {"train": x})
    return out


def measure(fn, steps, repeats):
    rates = []
    for r in range(repeats):
        t0 = time.perf_counter()
        fn(r * steps, steps)
        rates.append(steps / (time.perf_counter() - t0))
    return rates


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", help="a prepared directory (default: a synthetic 64x64x3 cache in a temp dir)")
    ap.add_argument("--split", default="train")
    ap.add_argument("--n", type=int, default=50_000, help="images in the synthetic cache")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=200, help="batches per repeat")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--no-append", action="store_true", help="do not append to bench/RESULTS.md")
    ap.add_argument("--note", default="", help="free text for the RESULTS.md row (e.g. machine load)")
    ap.add_argument("--json", help="also write the rates (images/s per repeat) to this file")
    args = ap.parse_args()

    cores = sorted(os.sched_getaffinity(0))[:args.cores]
    os.sched_setaffinity(0, cores)
    torch.set_num_threads(len(cores))
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory(prefix="dsmctl-bench-") as tmp:
        cache = Path(args.cache) if args.cache else make_cache(args.n, 64, tmp)
        data = load_split(cache, args.split)
        _ = data.array[:].sum(dtype=np.uint64)  # warm the page cache
        B, n = args.batch, len(data)
        sampler = IndexSampler(n, B, seed=0)

        def make(step):
            return data.batch(sampler.positions(step), "cpu", flip=random_flips(0, step, B))

        def sync(start, steps):
            for s in range(start, start + steps):
                x = make(s)
            assert x.shape == (B, *data.shape) and x.dtype == torch.float32

        def prefetched(start, steps):
            for x in Prefetch(make, range(start, start + steps), depth=3, workers=1):
                pass

        def host_uint8(start, steps):  # what a GPU run does on the host: gather + flip, no float conversion
            for s in range(start, start + steps):
                pos = np.sort(sampler.positions(s))
                rows = data.array[pos]
                sel = np.flatnonzero(random_flips(0, s, B))
                rows[sel] = rows[sel, ..., ::-1]

        results = {}
        for name, fn in (("float32 batches, synchronous", sync), ("float32 batches, 1 prefetch thread", prefetched),
                         ("uint8 host side only (GPU path)", host_uint8)):
            fn(0, 5)  # warm-up
            rates = [r * B for r in measure(fn, args.steps, args.repeats)]
            results[name] = rates
    load_after = os.getloadavg()

    shape = "x".join(map(str, data.shape))
    print(f"loader benchmark: {n:,} images of {shape} uint8 ({'synthetic' if not args.cache else args.cache}), "
          f"batch {B}, random indices + flips, {len(cores)} cores, {args.repeats} x {args.steps} batches")
    print(f"{'path':40s} {'median':>10s} {'min':>10s} {'max':>10s}   img/s")
    for name, rates in results.items():
        print(f"{name:40s} {statistics.median(rates):10,.0f} {min(rates):10,.0f} {max(rates):10,.0f}")
    print(f"load average before/after: {load_before[0]:.1f} / {load_after[0]:.1f} (other processes share these cores)")
    if args.json:
        Path(args.json).write_text(json.dumps({"cores": len(cores), "batch": B, "shape": list(data.shape),
                                               "rates": results}, indent=1))

    if not args.no_append:
        path = Path(__file__).with_name("RESULTS.md")
        if not path.exists():
            path.write_text("# Benchmarks\n\n")
        lines = [f"\n## loader.py, {datetime.datetime.now().isoformat(timespec='minutes')}\n",
                 f"- machine: {cpu_name()}, {os.cpu_count()} CPUs visible, pinned to {len(cores)} ({cores}); "
                 f"{platform.platform()}",
                 f"- versions: python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}",
                 f"- data: {n:,} images of {shape} uint8 ({'synthetic, temp dir' if not args.cache else args.cache}), "
                 f"page cache warm; batch {B}; random indices (per-epoch permutation) + random flips; "
                 f"{args.repeats} repeats x {args.steps} batches",
                 f"- load average (1 min) before/after: {load_before[0]:.1f} / {load_after[0]:.1f}"
                 + (f"; {args.note}" if args.note else ""),
                 "", "| path | median img/s | min | max |", "|---|---:|---:|---:|"]
        lines += [f"| {k} | {statistics.median(v):,.0f} | {min(v):,.0f} | {max(v):,.0f} |" for k, v in results.items()]
        path.write_text(path.read_text() + "\n".join(lines) + "\n")
        print(f"appended to {path}")


if __name__ == "__main__":
    main()
