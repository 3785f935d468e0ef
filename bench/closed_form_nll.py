"""One-shot, dequantized and PF-ODE NLL on closed-form densities, through the same code as a network.

    PYTHONPATH=. python bench/closed_form_nll.py [--quick]

Prints a markdown table (nats/dim) of each estimator minus the analytic value on the same images, and
the effective dimension against sum_i lambda_i / (lambda_i + t). Numbers for docs/validation.md.
"""
import math
import sys
import time

import torch

from dsmctl import units
from dsmctl.nll.dequantize import dequantized_nll
from dsmctl.analysis.dimension import dataset_means, dimension_profile
from dsmctl.data.arrays import ArrayData
from dsmctl.nn.densities import Gaussian, gsm
from dsmctl.nll.likelihood import one_shot_nll
from dsmctl.nll.pfode import anchor_prior, pf_ode_nll

torch.set_num_threads(1)
quick = "--quick" in sys.argv
g = torch.Generator().manual_seed(0)


def image_gaussian(d, lo=3e-3, hi=3e-2):
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    vals = torch.logspace(math.log10(lo), math.log10(hi), d, dtype=torch.float64)
    return Gaussian((d,), mean=torch.full((d,), 0.5, dtype=torch.float64), eigvecs=q, eigvals=vals, floor=0.0)


def row(name, d, n, analytic, ests):
    cells = " | ".join(f"{v - analytic:+.5f} ({s:.0f} s{', ' + extra if extra else ''})" for v, s, extra in ests)
    print(f"| {name} | {d} | {n} | {analytic:.5f} | {cells} |", flush=True)


print("| density | d | images | analytic nats/dim | one-shot (paper anchor) − analytic | one-shot (gaussian anchor) − analytic | PF-ODE − analytic |")
print("|---|---|---|---|---|---|---|")
cases = [("Gaussian, full covariance", image_gaussian(32), 32, 2000, None),
         ("GSM ½N(0,I)+½N(0,16I)", gsm(16), 16, 2000, None)]
if not quick:
    cases.append(("GSM ½N(0,I)+½N(0,16I)", gsm(1000), 1000, 2000, 1))
for name, dens, d, n, probes in cases:
    x = dens.sample(n, g)
    x = x - (dens.mean if isinstance(dens, Gaussian) else 0)  # the paper anchor assumes zero mean
    shifted = Gaussian((d,), None, dens.eigvecs, dens.eigvals, 0.0) if isinstance(dens, Gaussian) else dens
    data = ArrayData(x.numpy(), name=name)
    fit_on = dens.sample(n, g) - (dens.mean if isinstance(dens, Gaussian) else 0)  # an independent "training split"
    analytic = shifted(x, 0.0).energy.mean().item() / d
    ests = []
    for anchor in ("paper", "gaussian"):
        t0 = time.time()
        r = one_shot_nll(shifted, data, anchor=anchor, t_max=1e3)
        ests.append((r.nats_per_dim, time.time() - t0, f"c = {r.constant / d:+.4f}/dim"))
    n_ode = 256 if d > 100 else 200
    t0 = time.time()
    r, _, energy, _, _ = pf_ode_nll(shifted, data.subset(range(n_ode)), anchor_prior("gaussian", ArrayData(fit_on.numpy())), 1e-9, 1e3,
                                    probes=probes, dtype=torch.float64, batch_size=n_ode)
    diff = (energy - shifted(x[:n_ode], 0.0).energy) / d  # per image, same images
    ests.append((diff.mean().item() + analytic, time.time() - t0,
                 f"± {diff.std().item() / math.sqrt(n_ode):.5f}, max |per image| {diff.abs().max().item():.5f}; "
                 f"{n_ode} images, {'exact trace' if not probes else f'{probes} probe'}, NFE {r.nfe_mean:.0f}"))
    row(name, d, n, analytic, ests)

print()
print("| density | d | images | analytic (bits/dim, +8) | one-shot − analytic | dequantized (4 draws) − analytic | Jensen gap predicted |")
print("|---|---|---|---|---|---|---|")
dens = image_gaussian(64)
x = dens.sample(4000, g).clamp(0, 1)
data = ArrayData((x * 255).round().to(torch.uint8).numpy(), name="quantized Gaussian")
xq = torch.from_numpy(data.array).double() / 255
analytic = units.bits_per_dim(dens(xq, 0.0).energy.mean().item(), 64, 8)
one = one_shot_nll(dens, data, anchor="gaussian")
deq = dequantized_nll(dens, data, draws=4, anchor="gaussian")
gap = units.nats_to_bits((1 / dens.variances()).sum().item() / (24 * 256**2)) / 64
print(f"| quantized Gaussian | 64 | 4000 | {analytic:.5f} | {one.bits_per_dim - analytic:+.5f} ± {one.bits_per_dim_stderr:.5f}"
      f" | {deq.bits_per_dim - analytic:+.5f} ± {deq.bits_per_dim_stderr:.5f} | {gap:+.5f} |")

print()
print("| t | d_eff (dataset mean, 200 images, 100 draws) | Σ λ/(λ+t) |")
print("|---|---|---|")
dens = image_gaussian(64, 1e-5, 1e-1)
x = dens.sample(200, g)
grid = [1e-6, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]
prof = dimension_profile(dens, x, grid, draws=100, dtype=torch.float64)
for m, t in zip(dataset_means(prof), grid):
    print(f"| {t:g} | {m['d_eff']:.3f} | {dens.effective_dimension(t):.3f} |")
