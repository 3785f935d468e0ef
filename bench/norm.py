"""The GainNorm + GELU layer alone: fused node (nn/fused.py) against plain autograd, interleaved.

Isolates what the fused node changes (no convolutions): "first order" = forward + backward, as in the
denoiser step; "second order" = forward, the gradient with create_graph=True, a loss on it and its backward,
as in the energy step (the loss also uses h, like U = 1/2 <y, f> makes the loss depend on f).

  python bench/norm.py                                    # 8 x 64 x 64 x 64 (a top-level layer of the paper UNet)
  python bench/norm.py --shape 128,64,64,64 --device cuda --repeats 50
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import append_results, loadavg, pick_device, print_table, summary, timed  # noqa: E402
from dsmctl.nn.unet import GainNorm  # noqa: E402


def first_order(norm, u, gain, w):
    h = norm(u, gain, gelu=True)
    (h * w).sum().backward()


def second_order(norm, u, gain, w):
    h = norm(u, gain, gelu=True)
    du, dgain = torch.autograd.grad((h * w).sum(), (u, gain), create_graph=True)
    (du.square().sum() + (h * du).sum() + dgain.square().sum()).backward()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="8,64,64,64", help="B,C,H,W of the conv output")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--no-append", action="store_true")
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    device = pick_device(args.device, args.threads)
    shape = tuple(int(s) for s in args.shape.split(","))
    g = torch.Generator().manual_seed(0)
    u = (torch.randn(shape, generator=g) + 0.5).to(device).requires_grad_()
    gain = (1 + 0.1 * torch.randn(shape[:2], generator=g)).to(device).requires_grad_()
    w = torch.randn(shape, generator=g).to(device)
    norms = {"fused": GainNorm(fused=True), "plain autograd": GainNorm(fused=False)}
    load0 = loadavg()
    table = [["pass", "fused ms", "plain autograd ms", "plain / fused"]]
    for name, fn in (("first order (denoiser-like)", first_order), ("second order (energy-like)", second_order)):
        times = {k: [] for k in norms}
        for k in norms:  # warm-up
            fn(norms[k], u, gain, w)
        for r in range(args.repeats):
            for k in (list(norms) if r % 2 == 0 else list(reversed(norms))):
                times[k].append(timed(lambda: fn(norms[k], u, gain, w), device))
                u.grad = gain.grad = None
        f, p = summary(times["fused"]), summary(times["plain autograd"])
        ratio = summary([b / a for a, b in zip(times["fused"], times["plain autograd"])])
        table.append([name, f"{1e3 * f[0]:.3g} [{1e3 * f[1]:.3g}, {1e3 * f[2]:.3g}]",
                      f"{1e3 * p[0]:.3g} [{1e3 * p[1]:.3g}, {1e3 * p[2]:.3g}]",
                      "{:.2f} [{:.2f}, {:.2f}]".format(*ratio)])
    load1 = loadavg()
    print_table(table)
    print(f"shape {shape}, {device}, threads {torch.get_num_threads()}, {args.repeats} interleaved repeats; "
          f"load {load0:.1f} / {load1:.1f}")
    if not args.no_append:
        append_results("norm.py: GainNorm + GELU alone, fused vs plain autograd", device,
                       [f"conv-output shape {shape}, fp32, {args.repeats} interleaved repeats, median [min, max]"],
                       table, args.note, (load0, load1))


if __name__ == "__main__":
    main()
