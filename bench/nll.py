"""eval-nll cost: the one-shot NLL (one network evaluation per image at t, plus the constant at t_max) against
the probability-flow ODE NLL, on the same model and images: wall time, network evaluations, agreement.

Network evaluations are counted, not assumed: a forward hook on the UNet (or calls to a closed-form density)
counts the images that pass through it; "per image" divides by the number of evaluated images. For a
PF-ODE that estimates the divergence with extra vector-Jacobian products, those backward passes are in the
wall time but not in the count.

  python bench/nll.py                          # untrained small UNet, random 8-bit images: cost only
  python bench/nll.py --model runs/quickstart-xxxx --n-images 16   # a trained model on its eval split
  python bench/nll.py --gaussian               # a Gaussian fitted to the data: both against the exact NLL

The PF-ODE is dsmctl.nll.pfode.pf_ode_nll (the estimator behind `eval-nll --estimator pf-ode`), started at
--t-min (or at --t for noisy data) with the same prior at t_max as the one-shot anchor: N(0, t_max I) for an
untrained model, the model's own anchor for --model (its Gaussian fitted on the training split), the exact
density for --gaussian. Divergence: exact trace for d <= 64, else Hutchinson with --probes probes.
"""
import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import append_results, loadavg, pick_device, print_table, sync  # noqa: E402
from dsmctl.data.arrays import ArrayData  # noqa: E402
from dsmctl.nn.densities import Gaussian  # noqa: E402
from dsmctl.nll.likelihood import one_shot_nll  # noqa: E402
from dsmctl.nn.energy import EnergyModel  # noqa: E402
from dsmctl.nn.unet import UNet  # noqa: E402
from dsmctl.nll.pfode import anchor_prior, pf_ode_nll  # noqa: E402

TARGETS = {"evals": 1000, "time": 300, "bits": 0.02}


class Counted:
    """Counts images through the network (a hook on model.net) or through calls (closed-form densities)."""

    def __init__(self, model):
        self.model, self.images = model, 0
        net = getattr(model, "net", None)
        if isinstance(net, torch.nn.Module):
            net.register_forward_hook(lambda m, args, out: self._add(args[0].shape[0]))
            self.hooked = True
        else:
            self.hooked = False

    def _add(self, n):
        self.images += n

    def __call__(self, y, t, *args, **kwargs):
        if not self.hooked:
            self._add(y.shape[0])
        return self.model(y, t, *args, **kwargs)

    def __getattr__(self, name):  # everything else (parameters(), net, eval(), ...) is the model's
        return getattr(self.model, name)

    @property
    def target(self):
        """What to hand to an estimator: the model itself when its network is hooked (so isinstance checks and
        nn.Module methods work), else this counting wrapper."""
        return self.model if self.hooked else self


def run(fn, device):
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def default_setup(args, device):
    """An untrained small energy UNet and random 8-bit images (the cost does not depend on the weights)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (args.n_images, args.channels, args.side, args.side), dtype=np.uint8)
    torch.manual_seed(0)
    widths = tuple(int(w) for w in args.widths.split(","))
    model = EnergyModel(UNet(args.channels, widths[:-1], widths[-1], args.layers)).to(device).eval()
    return model, ArrayData(x, name=f"random uint8 {args.channels}x{args.side}x{args.side}"), "untrained"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a dsmctl model file, checkpoint or run directory (default: untrained small UNet)")
    ap.add_argument("--data", help="evaluation source for --model (default: its own)")
    ap.add_argument("--split", help="split for --model (default: the recipe's eval split)")
    ap.add_argument("--gaussian", action="store_true", help="use a Gaussian fitted to the data as the model")
    ap.add_argument("--t-min", type=float, default=None, help="PF-ODE start for clean data (default: the recipe's "
                    "noise.t_min for --model, else 1e-9)")
    ap.add_argument("--probes", type=int, default=None, help="Hutchinson probes (0: exact trace; default: exact "
                    "for d <= 64, else 1)")
    ap.add_argument("--rtol", type=float, default=1e-5)
    ap.add_argument("--max-steps", type=int, default=1000, help="accepted ODE steps per image before it is "
                    "reported as not converged (bounds the time on an untrained model)")
    ap.add_argument("--atol", type=float, default=1e-5)
    ap.add_argument("--n-images", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--t", type=float, default=0.0, help="noise variance of the evaluated data (0: clean 8-bit)")
    ap.add_argument("--t-max", type=float, default=None, help="where the constant is fixed and the ODE ends "
                    "(default: the recipe's eval.t_max for --model, else 1e3)")
    ap.add_argument("--side", type=int, default=16, help="default setup: image side")
    ap.add_argument("--channels", type=int, default=1, help="default setup: channels")
    ap.add_argument("--widths", default="16,32,64", help="default setup: encoder widths then middle width")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--layers", type=int, default=3, help="default setup: layers per block (paper: 3)")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--no-append", action="store_true")
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    device = pick_device(args.device, args.threads)
    load0 = loadavg()

    t_min, anchor, prior = args.t_min or 1e-9, "paper", None
    if args.model:
        from dsmctl.nn.model_file import load_model
        from dsmctl.data import open_split
        from dsmctl.nll.evaluate import open_eval_data
        model, meta = load_model(args.model, device)
        data, source, synthetic = open_eval_data(meta, args.data, args.split, args.n_images)
        what = f"{args.model} on {source}"
        t_min, anchor = args.t_min or meta["recipe"]["noise"]["t_min"], meta["recipe"]["eval"]["anchor"]
        args.t_max = args.t_max or meta["recipe"]["eval"]["t_max"]  # beyond the trained range the flow is stiff
        if anchor == "gaussian":  # fitted on other images than the evaluated ones (see pfode.anchor_prior)
            prior = anchor_prior(anchor, open_split(source, meta["recipe"]["data"]["train_split"], synthetic))
    else:
        model, data, what = default_setup(args, device)
        what = f"untrained EnergyModel(UNet widths {args.widths}) on {data.name}"
    if args.gaussian:
        model = Gaussian.fit(torch.cat([b for _, b in data.batches(1024, dtype=torch.float64)]), min_var=1e-4)
        what = f"Gaussian fitted to {data.name} (closed form; exact NLL known)"
        anchor, prior = "gaussian", model  # the model's own p_t_max is the exact prior
    args.t_max = args.t_max or 1e3
    data = data.subset(np.arange(min(args.n_images, len(data))))
    prior = prior or anchor_prior(anchor, data, data.shape)
    n = len(data)
    kw = dict(t=args.t, t_max=args.t_max, batch_size=args.batch_size, seed=0, device=device)

    results = {}
    counted = Counted(model)
    with torch.no_grad():
        res, secs = run(lambda: one_shot_nll(counted.target, data, anchor=anchor, **kw), device)
    results["one-shot (with constant)"] = (res.bits_per_dim, counted.images / n, secs)
    counted.images = 0
    with torch.no_grad():
        res2, secs2 = run(lambda: one_shot_nll(counted.target, data, constant=(res.constant, res.constant_stderr), **kw),
                          device)
    results["one-shot (stored constant)"] = (res2.bits_per_dim, counted.images / n, secs2)
    if args.gaussian:
        with torch.no_grad():
            exact = torch.cat([model(x, args.t).energy for _, x in data.batches(args.batch_size, dtype=torch.float64)])
        bits = exact.mean().item() / (data.d * math.log(2)) + (8 if args.t == 0 and data.quantization_bits else 0)
        results["exact (closed form)"] = (bits, float("nan"), float("nan"))

    probes = args.probes if args.probes is not None else (None if data.d <= 64 else 1)
    counted.images = 0
    (ode, *_), secs = run(lambda: pf_ode_nll(counted.target, data, prior, t_min, args.t_max, args.rtol, args.atol,
                                             probes or None, args.batch_size, 0, device, max_steps=args.max_steps,
                                             noisy_t=args.t), device)
    nfe = counted.images / n
    divergence = f"Hutchinson {probes} probe(s)" if probes else "exact trace"
    ode_name = f"PF-ODE ({divergence}, rtol {args.rtol:g})"
    results[ode_name] = (ode.bits_per_dim, nfe if nfe else ode.nfe_mean, secs)
    if ode.n_converged < ode.n_images:
        print(f"PF-ODE: {ode.n_images - ode.n_converged} image(s) did not converge: {ode.not_converged}")
    load1 = loadavg()

    table = [["method", "bits/dim", "network evals / image", "wall s", "s / image"]]
    for name, (bits, evals, secs) in results.items():
        table.append([name, f"{bits:.4f}", "-" if math.isnan(evals) else f"{evals:,.1f}",
                      "-" if math.isnan(secs) else f"{secs:.3g}", "-" if math.isnan(secs) else f"{secs / n:.3g}"])
    lines = [f"model: {what}; {n} images of {'x'.join(map(str, data.shape))}, t = {args.t:g}, t_max = {args.t_max:g}, "
             f"batch {args.batch_size}, noise seed 0, anchor {anchor}, PF-ODE from t = {args.t or t_min:g}"]
    o = results[ode_name]
    verdict = lambda ok: "met" if ok else "MISSED"  # noqa: E731
    for base in ("one-shot (with constant)", "one-shot (stored constant)"):
        s = results[base]
        evals_ratio, time_ratio, diff = o[1] / s[1], o[2] / s[2], abs(o[0] - s[0])
        lines.append(f"PF-ODE vs {base}: {evals_ratio:,.0f}x network evaluations (target >= {TARGETS['evals']}: "
                     f"{verdict(evals_ratio >= TARGETS['evals'])}), {time_ratio:,.0f}x wall time (target >= "
                     f"{TARGETS['time']}: {verdict(time_ratio >= TARGETS['time'])}), |difference| {diff:.4f} "
                     f"bits/dim (target <= {TARGETS['bits']}: {verdict(diff <= TARGETS['bits'])}"
                     + ("; untrained model: not a consistent density, agreement not expected"
                        if what.startswith("untrained") else "") + ")")
    print_table(table)
    for line in lines:
        print(line)
    if args.json:
        keys = ("bits_per_dim", "evals_per_image", "seconds")
        Path(args.json).write_text(json.dumps({"what": what, "n_images": n, "shape": list(data.shape), "lines": lines,
                                               "results": {k: dict(zip(keys, v)) for k, v in results.items()}},
                                              indent=1))
    if not args.no_append:
        append_results("nll.py: one-shot NLL vs PF-ODE", device, lines, table, args.note, (load0, load1))


if __name__ == "__main__":
    main()
