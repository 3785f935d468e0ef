"""Where a model trained on closed-form synthetic data (gsm16) is wrong, noise level by noise level, against the truth.

    python bench/score_errors.py RUN [--n 500] [--per-decade 2] [--seed 0]

On the first N test images, at t on a log grid over the trained range [t_min, t_max], with y = x + sqrt(t) z
(z keyed by seed), in nats per dimension:
  S(t) = t E|grad_y U_model - grad_y U_true|^2 / d    the space score's error; 1/2 int S dlog t bounds the
                                                       KL of the reverse SDE from the model, the scale of the
                                                       PF-ODE's excess over the truth (not an identity for the ODE)
  B(t) = E[t d_t U_model - t d_t U_true] / d          the time score's bias on noisy images at t
  F(t) = E[t d_t (U_model - U_true)(y0, t)] / d       the same at the fixed evaluated images y0 = x + sqrt(t_eval) z0:
                                                       -int F dlog t is the one-shot error accumulated from t_max
                                                       down to t_eval (the error at t_max, absorbed by the constant,
                                                       is not included)
Prints one row per t and the three integrals (trapezoid in log t).
"""
import argparse
import math

import numpy as np
import torch

from dsmctl import data as data_mod
from dsmctl.nn.model_file import load_model
from dsmctl.rng import indexed_normal


def derivatives(f, y, t):
    with torch.enable_grad():
        y = y.detach().requires_grad_(True)
        out = f(y, t, need=("grad_y", "grad_t"))
        return out.grad_y.detach().flatten(1).double(), out.grad_t.detach().double()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--per-decade", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=250)
    o = ap.parse_args()
    torch.set_num_threads(1)
    model, meta = load_model(o.run)
    rec = meta["recipe"]
    src, syn = rec["data"]["source"], rec["data"].get("synthetic")
    truth = data_mod.true_density(src, syn)
    if truth is None:
        raise SystemExit(f"{o.run}: trained on {src}, which has no closed form")
    test = data_mod.open_split(src, rec["data"]["eval_split"], syn)
    test = test.subset(np.arange(min(o.n, len(test))))
    t_min, t_max, t_eval = rec["noise"]["t_min"], rec["noise"]["t_max"], rec["eval"]["t"] or rec["noise"]["t_min"]
    decades = math.log10(t_max / t_min)
    grid = np.logspace(math.log10(t_min), math.log10(t_max), int(round(decades * o.per_decade)) + 1)
    d = test.d
    rows = []
    print("| t | S(t) space error | B(t) time bias on p_t | F(t) time bias at the evaluated images |")
    print("|---|---|---|---|")
    for t in grid:
        s_sum = b_sum = f_sum = 0.0
        for idx, x in test.batches(o.batch_size):
            x = x.double()
            tt = torch.full((len(x),), float(t), dtype=torch.float32)
            y = x + math.sqrt(t) * indexed_normal(idx, test.shape, o.seed, 11, torch.float64, None)
            y0 = x + math.sqrt(t_eval) * indexed_normal(idx, test.shape, o.seed, 12, torch.float64, None)
            gm, tm = derivatives(model, y.float(), tt)
            gt, tt_true = derivatives(truth, y, tt.double())
            s_sum += (t * (gm - gt).square().sum(1)).sum().item()
            b_sum += (t * (tm - tt_true)).sum().item()
            _, tm0 = derivatives(model, y0.float(), tt)
            _, tt0 = derivatives(truth, y0, tt.double())
            f_sum += (t * (tm0 - tt0)).sum().item()
        n = len(test)
        rows.append((t, s_sum / n / d, b_sum / n / d, f_sum / n / d))
        print(f"| {t:.1e} | {rows[-1][1]:.5f} | {rows[-1][2]:+.5f} | {rows[-1][3]:+.5f} |", flush=True)
    logt = np.log([r[0] for r in rows])
    integral = lambda k: float(np.trapezoid([r[k] for r in rows], logt))
    print(f"1/2 int S dlog t = {0.5 * integral(1):.4f} nats/dim (space-score error, scale of the PF-ODE excess)")
    print(f"int B dlog t = {integral(2):+.4f} nats/dim (time-score bias on p_t)")
    print(f"-int F dlog t = {-integral(3):+.4f} nats/dim (one-shot error accumulated from t_max to the evaluated images)")


if __name__ == "__main__":
    main()
