"""What the dequantized bound of p_t costs a *perfect* model, per pixel, in closed form (docs/fashion-mnist.md, section 0).

One pixel whose 8-bit value sits in an isolated bin of width D = 1/256 (all the data's mass in that bin, none in
its neighbours). A perfect model of the training data plus N(0, t) noise is
    grid-trained:        p_t = N(0, t)                       (the data are the grid points)
    dequantize-trained:  p_t = Uniform(-D/2, D/2) * N(0, t)  (the data are spread uniformly over the bin)
The discrete NLL is 0 (the bin has probability 1). The importance-weighted uniform bound tends, as K grows, to
-log2 P_t(bin), the mass p_t keeps inside the bin; with K draws it is E[-log2 mean_k p_t(u_k) D], u_k uniform in
the bin. Both are printed, in bits per pixel (= bits/dim): the excess over the truth that no training can remove.

    python bench/ideal_bound_excess.py [--ts 1e-8,1e-7,3e-7,1e-6,3e-6,1e-5] [--k 4] [--draws 200000]
"""
import argparse
import math

import numpy as np
import torch

D = 1 / 256


def mass_in_bin(t, trained_on):
    """P_t(bin) of the perfect model: a Gaussian CDF difference (grid), or the density integrated over the bin by
    Gauss-Legendre (box)."""
    if trained_on == "grid":
        return math.erf(D / 2 / math.sqrt(2 * t))
    v, w = _legendre(200)
    return float((w * D / 2 * density(v * D / 2, t, "box")).sum())


def density(y, t, trained_on):
    s = math.sqrt(t)
    if trained_on == "grid":
        return torch.exp(-0.5 * (y / s) ** 2) / (s * math.sqrt(2 * math.pi))
    return (0.5 * (torch.erf((D / 2 - y) / (s * math.sqrt(2))) - torch.erf((-D / 2 - y) / (s * math.sqrt(2))))) / D


def k_draw_bound(t, trained_on, k, draws, seed=0):
    """E[-log2 (1/K) sum_k p_t(u_k) D], u_k uniform in the bin (Monte Carlo, float64); +inf where p_t underflows."""
    g = torch.Generator().manual_seed(seed)
    u = (torch.rand(draws, k, generator=g, dtype=torch.float64) - 0.5) * D
    est = (density(u, t, trained_on) * D).mean(1)
    return float((-torch.log2(est)).mean())


def _legendre(n):
    xs, ws = np.polynomial.legendre.leggauss(n)
    return torch.tensor(xs, dtype=torch.float64), torch.tensor(ws, dtype=torch.float64)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ts", default="1e-8,1e-7,3e-7,1e-6,3e-6,1e-5")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--draws", type=int, default=200000)
    a = ap.parse_args()
    print(f"| t (sigma / bin) | grid-trained, K -> inf | grid-trained, K = {a.k} | dequantize-trained, K -> inf "
          f"| dequantize-trained, K = {a.k} |")
    print("|---|---|---|---|---|")
    for t in (float(x) for x in a.ts.split(",")):
        row = [f"{-math.log2(mass_in_bin(t, m)):.4f}" if mass_in_bin(t, m) > 0 else "inf" for m in ("grid", "box")]
        kb = [k_draw_bound(t, m, a.k, a.draws) for m in ("grid", "box")]
        kb = [f"{x:.4f}" if math.isfinite(x) else "inf" for x in kb]
        print(f"| {t:g} ({math.sqrt(t) / D:.3f}) | {row[0]} | {kb[0]} | {row[1]} | {kb[1]} |")


if __name__ == "__main__":
    main()
