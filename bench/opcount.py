"""What one training step asks of the hardware: kernels, matmul/conv FLOPs, bytes moved by everything else.

Runs one energy (dual) step and one denoiser step of the same UNet under a TorchDispatchMode that sees
every aten op after autograd, i.e. every kernel a GPU would launch. Views cost nothing; convolutions and
matmuls are counted in FLOPs (torch.utils.flop_counter's formulas); every other op in bytes read + written.
The counts do not depend on the machine, so they show the effect of code changes without a GPU, and a
simple roofline turns them into a *modeled* GPU time (stated as such; the parameters are printed):

  time = conv/matmul FLOPs / flops + other bytes / bandwidth + kernels * launch

  python bench/opcount.py                          # paper UNet, 64x64 colour, batch 8 (counts scale with batch)
  python bench/opcount.py --side 32 --batch 4 --top 25   # also list the most expensive non-conv ops
"""
import argparse
import collections
import sys
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import make_models, make_batch, train_step  # noqa: E402

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


def modeled_seconds(c, flops_per_s, bytes_per_s, launch_s):
    return c["flops"] / flops_per_s + c["bytes"] / bytes_per_s + c["kernels"] * launch_s


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", type=int, default=64)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--widths", default="64,128,256,512", help="encoder widths then the middle width")
    ap.add_argument("--flops", type=float, default=50e12, help="model: sustained conv FLOP/s (H100 fp32 ~ 50e12)")
    ap.add_argument("--bandwidth", type=float, default=2.5e12, help="model: sustained bytes/s (H100 HBM3 ~ 2.5e12)")
    ap.add_argument("--launch", type=float, default=5e-6, help="model: seconds per kernel launch")
    ap.add_argument("--top", type=int, default=0, help="list the N non-conv ops that move the most bytes")
    args = ap.parse_args()
    torch.set_num_threads(1)
    widths = tuple(int(w) for w in args.widths.split(","))
    energy, denoiser = make_models(args.channels, widths[:-1], widths[-1])
    x, t, z = make_batch(args.batch, args.channels, args.side)
    res = {"energy (dual)": count(energy, "dual", x, t, z), "denoiser (single)": count(denoiser, "single", x, t, z)}
    print(f"one training step, UNet widths {widths}, {args.channels}x{args.side}x{args.side}, batch {args.batch}")
    print(f"{'step':18s} {'kernels':>8s} {'conv+mm GFLOP':>14s} {'other GB':>9s} {'modeled ms':>11s}")
    for k, c in res.items():
        ms = 1e3 * modeled_seconds(c, args.flops, args.bandwidth, args.launch)
        print(f"{k:18s} {c['kernels']:8d} {c['flops'] / 1e9:14.2f} {c['bytes'] / 1e9:9.3f} {ms:11.2f}")
    e, d = res.values()
    ratio = modeled_seconds(e, args.flops, args.bandwidth, args.launch) / modeled_seconds(d, args.flops, args.bandwidth,
                                                                                         args.launch)
    print(f"ratios energy/denoiser: kernels {e['kernels'] / d['kernels']:.2f}, FLOPs {e['flops'] / d['flops']:.2f}, "
          f"bytes {e['bytes'] / d['bytes']:.2f}; modeled time {ratio:.2f} "
          f"(roofline: {args.flops:.3g} FLOP/s, {args.bandwidth:.3g} B/s, {args.launch * 1e6:g} us/kernel; a model, "
          f"not a measurement)")
    if args.top:
        for k, c in res.items():
            print(f"\n{k}: top non-conv ops by bytes")
            for name, (n, b) in sorted(c["by_op"].items(), key=lambda kv: -kv[1][1])[:args.top]:
                print(f"  {name:28s} {n:5d} calls {b / 1e6:10.1f} MB")


if __name__ == "__main__":
    main()
