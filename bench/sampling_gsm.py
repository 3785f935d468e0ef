"""Samplers on the exact GSM d = 1000 energy (and a 16-d Gaussian): radial KS, mixture weight, sample log p,
MH acceptance per level. Not a test: prints one JSON document (the numbers in docs/sampling.md).

  PYTHONPATH=. python bench/sampling_gsm.py --n 1000 > gsm.json
  PYTHONPATH=. python bench/sampling_gsm.py --only mala,ula --step-scales 0.1,0.3,1.0
"""
import argparse
import json
import math
import sys
import time

import torch
from scipy import stats

from dsmctl import units
from dsmctl.nn import densities
from dsmctl.sample import samplers as sampling
from dsmctl.sample.samplers import SamplerConfig

CONFIGS = {
    "ode-heun-100": dict(sampler="ode", solver="heun", steps=100),
    "ode-euler-100": dict(sampler="ode", solver="euler", steps=100),
    "sde-heun-200": dict(sampler="sde", solver="heun", steps=200),
    "sde-euler-200": dict(sampler="sde", solver="euler", steps=200),
    "ascent": dict(sampler="ascent", h0=0.01, beta=0.5, t_min=1e-4),
    "ascent-paper": dict(sampler="ascent", h0=0.1, beta=0.5, h_schedule="paper", noise_estimate="residual", t_min=1e-4),
    "ascent-timescore": dict(sampler="ascent", h0=0.01, beta=0.5, noise_estimate="time-score", t_min=1e-4),
    "mala": dict(sampler="mala", steps=30, langevin_steps=10),  # the CLI defaults
    "ula": dict(sampler="ula", steps=30, langevin_steps=10),
    "mala-none": dict(sampler="mala", steps=30, langevin_steps=10, predictor="none"),
}


def gsm_report(x, gsm, d):
    r = (x.double().square().sum(1) / d).numpy()
    ks = stats.kstest(r, lambda v: 0.5 * stats.chi2.cdf(v * d, d) + 0.5 * stats.chi2.cdf(v * d / 16, d))
    energy = gsm(x.double(), 0.0).energy
    return {"ks": ks.statistic, "ks_p": ks.pvalue, "frac_low_component": float((r < 4).mean()),
            "mean_r2_low": float(r[r < 4].mean()) if (r < 4).any() else None,
            "mean_r2_high": float(r[r >= 4].mean()) if (r >= 4).any() else None,
            "log_p_nats_per_dim": -energy.mean().item() / d,
            "log_p_db_per_dim": units.log_p_db_per_dim(energy.mean().item(), d),
            "log_p_db_per_dim_stderr": units.nats_to_db(energy.std().item() / math.sqrt(len(energy))) / d}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--d", type=int, default=1000)
    p.add_argument("--only", default=",".join(CONFIGS))
    p.add_argument("--step-scales", default="0.1", help="mala/ula: comma-separated step scales")
    p.add_argument("--t-max", type=float, default=1e3)
    p.add_argument("--t-min", type=float, default=1e-5)
    a = p.parse_args()
    torch.set_num_threads(1)
    gsm = densities.gsm(a.d)
    exact = gsm.sample(a.n, torch.Generator().manual_seed(12345), torch.float32)
    reference = gsm.sample(20_000, torch.Generator().manual_seed(54321), torch.float32)
    out = {"density": f"GSM d={a.d}, 1/2 N(0, I) + 1/2 N(0, 16 I)", "n": a.n,
           "exact_samples": gsm_report(exact, gsm, a.d), "exact_reference_20000": gsm_report(reference, gsm, a.d),
           "runs": {}}
    for name in a.only.split(","):
        scales = [float(s) for s in a.step_scales.split(",")] if name in ("mala", "ula") else [None]
        if name not in CONFIGS:
            raise SystemExit(f"unknown config {name}; expected one of {', '.join(CONFIGS)}")
        for scale in scales:
            kw = {"t_max": a.t_max, "t_min": a.t_min, **CONFIGS[name]}
            if scale is not None:
                kw["step_scale"] = scale
            cfg = SamplerConfig(**kw)
            t0 = time.time()
            res = sampling.sample(gsm, range(a.n), (a.d,), cfg, batch_size=a.n)
            rep = {"config": cfg.to_dict(), "seconds": time.time() - t0, **gsm_report(res["x"], gsm, a.d)}
            if "accept" in res and name.startswith("mala"):
                acc = sampling.acceptance_per_level(res["accept"])
                rep["acceptance_mean"] = sum(acc) / len(acc)
                rep["acceptance_per_level"] = [{"t": t, "accept": r} for t, r in zip(res["ts"].tolist(), acc)]
            if "iterations" in res:
                rep["iterations_mean"] = res["iterations"].double().mean().item()
            key = name if scale is None else f"{name}-eps{scale:g}t"
            out["runs"][key] = rep
            print(f"{key}: KS {rep['ks']:.3f} (p {rep['ks_p']:.3g}), low-component fraction "
                  f"{rep['frac_low_component']:.3f}, log p {rep['log_p_db_per_dim']:.3f} dB/dim, {rep['seconds']:.0f} s",
                  file=sys.stderr, flush=True)
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
