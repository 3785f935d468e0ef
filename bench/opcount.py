"""What one training step asks of the hardware: kernels, matmul/conv FLOPs, bytes moved by everything else.

Runs one energy (dual) step and one denoiser step of the same UNet under a TorchDispatchMode that sees
every aten op after autograd, i.e. every kernel a GPU would launch. Views cost nothing; convolutions and
matmuls are counted in FLOPs (torch.utils.flop_counter's formulas); every other op in bytes read + written.
The counts do not depend on the machine, so they show the effect of code changes without a GPU, and a
simple roofline turns them into a *modeled* GPU time (stated as such; the parameters are printed):

  time = conv/matmul FLOPs / flops + other bytes / bandwidth + kernels * launch

  python bench/opcount.py                         # paper UNet, 64x64 colour, batch 128 (from batches 1 and 2)
  python bench/opcount.py --reference-norm --top 25   # the plain-autograd norm; list the costliest non-conv ops
"""
import argparse
import collections
import json
import sys
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import append_results, make_batch, make_models, train_step  # noqa: E402

FREE = {"aten.detach.default", "aten.empty.memory_format", "aten.empty_strided.default", "aten.lift_fresh.default",
        "aten._to_copy.default:noop", "aten.set_.source_Storage", "aten.zeros_like.default:free"}
COMPUTE = ("convolution", "convolution_backward", "mm", "addmm", "bmm", "baddbmm")


def tensor_bytes(t):
    """Bytes a kernel touches for t: its distinct elements (an expanded tensor reads its storage once)."""
    span = 1 + sum((s - 1) * abs(st) for s, st in zip(t.shape, t.stride())) if t.numel() else 0
    return min(t.numel(), span) * t.element_size()


class OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.kernels = 0
        self.bytes = 0
        self.flops = 0
        self.by_op = collections.defaultdict(lambda: [0, 0])  # name -> [calls, bytes]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if func.is_view or str(func) in FREE or name in ("empty", "empty_like", "detach", "alias"):
            return out
        self.kernels += 1
        if func.overloadpacket in flop_registry:
            self.flops += flop_registry[func.overloadpacket](*args, **(kwargs or {}), out_val=out)
        elif name not in COMPUTE:
            flat = [a for a in torch.utils._pytree.tree_leaves((args, kwargs, out)) if isinstance(a, torch.Tensor)]
            b = sum(tensor_bytes(a) for a in flat)
            self.bytes += b
            self.by_op[name][0] += 1
            self.by_op[name][1] += b
        return out


def count(model, mode, x, t, z):
    counter = OpCounter()
    with counter:
        train_step(model, mode, x, t, z)
    return {"kernels": counter.kernels, "flops": counter.flops, "bytes": counter.bytes,
            "by_op": dict(counter.by_op)}


def extrapolate(c1, c2, b1, b2, batch):
    """Every op's size is affine in the batch, so two counts give the exact count at any batch."""
    f = (batch - b1) / (b2 - b1)
    out = {k: c1[k] + f * (c2[k] - c1[k]) for k in ("kernels", "flops", "bytes")}
    out["by_op"] = {k: [n, b + f * (c2["by_op"].get(k, [0, b])[1] - b)] for k, (n, b) in c1["by_op"].items()}
    return out


def modeled_seconds(c, flops_per_s, bytes_per_s, launch_s):
    """Roofline time of one step: conv/matmul FLOPs + other bytes + kernel launches, no overlap."""
    return c["flops"] / flops_per_s + c["bytes"] / bytes_per_s + c["kernels"] * launch_s


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", type=int, default=64)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128, help="batch of the counts (extrapolated from batches 1 and 2)")
    ap.add_argument("--widths", default="64,128,256,512", help="encoder widths then the middle width")
    ap.add_argument("--flops", type=float, default=50e12, help="model: sustained conv FLOP/s (H100 fp32 ~ 50e12)")
    ap.add_argument("--bandwidth", type=float, default=2.5e12, help="model: sustained bytes/s (H100 HBM3 ~ 2.5e12)")
    ap.add_argument("--launch", type=float, default=5e-6, help="model: seconds per kernel launch")
    ap.add_argument("--reference-norm", action="store_true",
                    help="plain-autograd GainNorm + GELU instead of the fused node (nn/fused.py)")
    ap.add_argument("--json", help="also write the counts to this file")
    ap.add_argument("--no-append", action="store_true", help="print only; do not append to bench/RESULTS.md")
    ap.add_argument("--note", default="")
    ap.add_argument("--top", type=int, default=0, help="list the N non-conv ops that move the most bytes")
    args = ap.parse_args()
    torch.set_num_threads(1)
    widths = tuple(int(w) for w in args.widths.split(","))
    energy, denoiser = make_models(args.channels, widths[:-1], widths[-1], fused=not args.reference_norm)
    res = {}
    for name, model, mode in (("energy (dual)", energy, "dual"), ("denoiser (single)", denoiser, "single")):
        c1, c2 = (count(model, mode, *make_batch(b, args.channels, args.side)) for b in (1, 2))
        res[name] = extrapolate(c1, c2, 1, 2, args.batch)
    roof = (args.flops, args.bandwidth, args.launch)
    print(f"one training step (loss + backward, no optimizer), UNet widths {widths}, "
          f"{args.channels}x{args.side}x{args.side}, batch {args.batch}"
          + (", reference (unfused) norm" if args.reference_norm else ", fused norm"))
    print(f"{'step':18s} {'kernels':>8s} {'conv+mm GFLOP':>14s} {'other GB':>9s} {'modeled ms':>11s}")
    for k, c in res.items():
        ms = 1e3 * modeled_seconds(c, *roof)
        print(f"{k:18s} {c['kernels']:8.0f} {c['flops'] / 1e9:14.1f} {c['bytes'] / 1e9:9.2f} {ms:11.1f}")
    e, d = res.values()
    ratio = modeled_seconds(e, *roof) / modeled_seconds(d, *roof)
    print(f"energy/denoiser: kernels {e['kernels'] / d['kernels']:.2f}, FLOPs {e['flops'] / d['flops']:.2f}, "
          f"bytes {e['bytes'] / d['bytes']:.2f}; modeled time {ratio:.2f} (roofline {args.flops:.3g} FLOP/s, "
          f"{args.bandwidth:.3g} B/s, {args.launch * 1e6:g} us/kernel: a model, not a measurement)")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "modeled_ratio": ratio, **res}, indent=1))
    if not args.no_append:
        table = [["step", "kernels", "conv+mm GFLOP", "other GB", "modeled ms"]]
        table += [[k, f"{c['kernels']:.0f}", f"{c['flops'] / 1e9:,.1f}", f"{c['bytes'] / 1e9:,.2f}",
                   f"{1e3 * modeled_seconds(c, *roof):.1f}"] for k, c in res.items()]
        table.append(["energy / denoiser", f"{e['kernels'] / d['kernels']:.2f}", f"{e['flops'] / d['flops']:.2f}",
                      f"{e['bytes'] / d['bytes']:.2f}", f"{ratio:.2f}"])
        lines = [f"counts of one loss + backward (no optimizer) at {args.channels}x{args.side}x{args.side}, batch "
                 f"{args.batch} (exact: extrapolated from batches 1 and 2), UNet widths {widths}, "
                 + ("plain-autograd (reference) norm" if args.reference_norm else "fused norm (nn/fused.py)"),
                 f"modeled ms = a roofline, NOT a measurement: {args.flops:.3g} conv FLOP/s + {args.bandwidth:.3g} B/s "
                 f"+ {args.launch * 1e6:g} us per kernel, no overlap; machine-independent counts"]
        append_results("opcount.py: kernels, FLOPs and bytes of one training step", torch.device("cpu"), lines,
                       table, args.note)
    if args.top:
        for k, c in res.items():
            print(f"\n{k}: top non-conv ops by bytes")
            for name, (n, b) in sorted(c["by_op"].items(), key=lambda kv: -kv[1][1])[:args.top]:
                print(f"  {name:28s} {n:5d} calls {b / 1e6:10.1f} MB")


if __name__ == "__main__":
    main()
