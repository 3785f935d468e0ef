"""Training step cost: the energy (dual score matching, double backward) step against the denoiser step.

Both models use the same UNet architecture and initial weights (bench/common.py); the denoiser twin is
trained on the space term alone, as in the paper's comparison. A step is loss + backward ("fwd+bwd", the
part the energy parameterization changes) then an Adam update ("full step" adds it). Energy and denoiser
steps are interleaved (E D D E E D ...) so that load on a shared machine hits both alike; the ratio is
the median of the per-pair ratios.

Memory: "graph" = the tensors autograd holds for the backward when the loss is formed (activations,
deduplicated, weights excluded; deterministic and device-independent). "peak" = on CUDA,
torch.cuda.max_memory_allocated above the weights; on the CPU, the peak resident set of a fresh process
running two steps, above its size before the first step (one process per model, so that one model's
high-water mark does not hide the other's), which also counts allocator and oneDNN caches. Both peaks
include gradients and Adam state (3x the weights: 99 MiB for the paper UNet) besides activations.

  python bench/step.py                                   # CPU default: paper UNet, 32x32 colour, batch 4
  python bench/step.py --sides 64 --batches 4,8          # the paper size at small batches
  python bench/step.py --sides 16,32,64 --width-mults 0.25,0.5,1 --batches 8   # scaling (bench/scaling.py)
  python bench/step.py --device cuda --sides 64 --batches 128 --repeats 20      # the paper's setting
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import (PAPER, append_results, graph_mib, loadavg, make_batch, make_models, rss_mib,  # noqa: E402
                          pick_device, print_table, summary, sync, train_step)
from dsmctl.nn.build import count_parameters  # noqa: E402
from dsmctl.engine.objectives import score_matching_loss  # noqa: E402

KINDS = {"energy": "dual", "denoiser": "single"}


def widths_for(mult):
    w = tuple(max(1, round(c * mult)) for c in PAPER["widths"])
    return w, max(1, round(PAPER["mid"] * mult))


def time_step(model, mode, opt, batch, device):
    """(fwd+bwd seconds, full step seconds) of one step."""
    x, t, z = batch
    sync(device)
    start = time.perf_counter()
    loss, _ = score_matching_loss(model, x, t, z, mode)
    loss.backward()
    sync(device)
    backward_done = time.perf_counter()
    opt.step()
    model.zero_grad(set_to_none=True)
    sync(device)
    return backward_done - start, time.perf_counter() - start


def measure(device, side, batch, mult, channels, repeats, warmup, channels_last, fused=True, also_reference=False):
    """Times of interleaved steps of every model: energy and denoiser, and their reference-norm twins if asked."""
    widths, mid = widths_for(mult)
    variants = [("", fused)] + ([("-reference", False)] if also_reference else [])
    models = {}
    for suffix, f in variants:
        e, d = make_models(channels, widths, mid, device=device, channels_last=channels_last, fused=f)
        models[f"energy{suffix}"], models[f"denoiser{suffix}"] = e, d
    mode = {k: KINDS[k.split("-")[0]] for k in models}
    opts = {k: torch.optim.Adam(m.parameters(), lr=1e-5) for k, m in models.items()}
    data = make_batch(batch, channels, side, device, channels_last=channels_last)
    for _ in range(warmup):
        for k in models:
            time_step(models[k], mode[k], opts[k], data, device)
    times = {k: [] for k in models}
    for r in range(repeats):
        for k in (list(models) if r % 2 == 0 else list(reversed(models))):
            times[k].append(time_step(models[k], mode[k], opts[k], data, device))
    graph = {k: graph_mib(models[k], mode[k], *data) for k in models}
    memory = {}
    if device.type == "cuda":
        for k in models:
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            time_step(models[k], mode[k], opts[k], data, device)
            memory[k] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    return {"widths": widths, "mid": mid, "params": count_parameters(models["energy"]), "times": times,
            "graph": graph, "memory": memory}


def probe_memory(kind, side, batch, mult, channels, fused):
    """Run in a fresh process: resident-set growth (MiB) over two steps of one model."""
    widths, mid = widths_for(mult)
    model = make_models(channels, widths, mid, fused=fused)[list(KINDS).index(kind)]
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    x, t, z = make_batch(batch, channels, side)
    before = rss_mib("VmRSS")
    for _ in range(2):
        train_step(model, KINDS[kind], x, t, z, opt)
    return rss_mib("VmHWM") - before


def cpu_memory(side, batch, mult, channels, threads, fused):
    out = {}
    for kind in KINDS:
        cmd = [sys.executable, __file__, "--probe", kind, "--sides", str(side), "--batches", str(batch),
               "--width-mults", str(mult), "--channels", str(channels), "--threads", str(threads)]
        cmd += [] if fused else ["--reference-norm"]
        res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
        out[kind] = json.loads(res.stdout.strip().splitlines()[-1])["mib"] if res.returncode == 0 else float("nan")
    return out


def table_row(r, suffix, side, batch, channels):
    e, d = r["times"][f"energy{suffix}"], r["times"][f"denoiser{suffix}"]
    ratio = [a[0] / b[0] for a, b in zip(e, d)]
    ratio_full = [a[1] / b[1] for a, b in zip(e, d)]
    em, dm = summary([a[1] for a in e]), summary([b[1] for b in d])
    mem, graph = r["memory"], r["graph"]
    norm = " (reference norm)" if suffix else ""
    return [f"{channels}x{side}x{side}{norm}", "/".join(map(str, (*r["widths"], r["mid"]))), f"{r['params']:,}", batch,
            f"{em[0]:.3g} [{em[1]:.3g}, {em[2]:.3g}]", f"{dm[0]:.3g} [{dm[1]:.3g}, {dm[2]:.3g}]",
            "{:.2f} [{:.2f}, {:.2f}]".format(*summary(ratio)), "{:.2f} [{:.2f}, {:.2f}]".format(*summary(ratio_full)),
            f"{batch / em[0]:,.1f}", f"{batch / dm[0]:,.1f}",
            f"{graph[f'energy{suffix}']:,.0f} / {graph[f'denoiser{suffix}']:,.0f}",
            f"{mem[f'energy{suffix}']:,.0f} / {mem[f'denoiser{suffix}']:,.0f}" if f"energy{suffix}" in mem else "-"]


def floats(s, tp=float):
    return [tp(v) for v in s.split(",") if v]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    ap.add_argument("--threads", type=int, default=1, help="CPU intra-op threads (recorded in the results)")
    ap.add_argument("--sides", default="32", help="image sides, comma-separated")
    ap.add_argument("--batches", default="4", help="batch sizes, comma-separated")
    ap.add_argument("--width-mults", default="1", help="multipliers of the paper widths 64,128,256 / 512")
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5, help="timed steps per model and configuration")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--channels-last", action="store_true", help="NHWC weights and inputs")
    ap.add_argument("--reference-norm", action="store_true",
                    help="plain-autograd GainNorm + GELU instead of the fused node (nn/fused.py)")
    ap.add_argument("--also-reference", action="store_true",
                    help="also time reference-norm twins, interleaved with the rest, and report the fused speedup")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    ap.add_argument("--no-append", action="store_true", help="print only; do not append to bench/RESULTS.md")
    ap.add_argument("--title", default="step.py: energy (dual) vs denoiser training step")
    ap.add_argument("--note", default="")
    ap.add_argument("--json", help="also write the raw measurements to this file")
    ap.add_argument("--probe", choices=list(KINDS), help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.probe:
        torch.set_num_threads(args.threads)
        mib = probe_memory(args.probe, int(args.sides), int(args.batches), float(args.width_mults), args.channels,
                           not args.reference_norm)
        print(json.dumps({"mib": mib}))
        return
    device = pick_device(args.device, args.threads)
    load0 = loadavg()
    table = [["size", "widths", "params", "batch", "energy s/step (full)", "denoiser s/step (full)", "ratio fwd+bwd",
              "ratio full", "energy img/s", "denoiser img/s", "graph MiB E / D", "peak MiB E / D"]]
    raw, speedups = [], []
    for side in floats(args.sides, int):
        for mult in floats(args.width_mults):
            for batch in floats(args.batches, int):
                r = measure(device, side, batch, mult, args.channels, args.repeats, args.warmup, args.channels_last,
                            not args.reference_norm, args.also_reference)
                if not args.no_memory and device.type == "cpu":
                    r["memory"] = cpu_memory(side, batch, mult, args.channels, args.threads, not args.reference_norm)
                for suffix in ("", "-reference") if args.also_reference else ("",):
                    row = table_row(r, suffix, side, batch, args.channels)
                    table.append(row)
                    print_table([table[0], row])
                if args.also_reference:
                    for kind in KINDS:
                        sp = [b[0] / a[0] for a, b in zip(r["times"][kind], r["times"][f"{kind}-reference"])]
                        speedups.append(f"{args.channels}x{side}x{side} w{mult:g} batch {batch}: {kind} fwd+bwd "
                                        "reference/fused = {:.2f} [{:.2f}, {:.2f}]".format(*summary(sp)))
                raw.append({"side": side, "batch": batch, "width_mult": mult, **r})
    load1 = loadavg()
    print()
    print_table(table)
    for line in speedups:
        print(line)
    print(f"load average before/after: {load0:.1f} / {load1:.1f}; device {device}, "
          f"threads {torch.get_num_threads()}; times: median [min, max] of {args.repeats} interleaved steps")
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1))
    if not args.no_append:
        lines = [f"steps: {args.repeats} timed per model after {args.warmup} warm-up, interleaved (E D D E ...); "
                 f"fwd+bwd = loss with the double backward (energy) or the space term (denoiser) + backward; full = "
                 f"+ Adam update; ratio = median [min, max] of per-pair ratios; fp32"
                 + (", channels-last" if args.channels_last else "")
                 + (", reference (plain-autograd) norm" if args.reference_norm else ", fused norm (nn/fused.py)"),
                 "memory: graph = tensors saved for the backward when the loss is formed (activations, deterministic); "
                 "peak = " + ("CUDA max_memory_allocated above the weights" if device.type == "cuda" else
                              "resident-set growth of a fresh process over two steps, incl. allocator/oneDNN caches")
                 + ", incl. gradients and Adam state (99 MiB for the paper UNet)"] + speedups
        append_results(args.title, device, lines, table, args.note, (load0, load1))


if __name__ == "__main__":
    main()
