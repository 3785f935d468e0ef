"""Out-of-distribution check on Fashion-MNIST (issue 15, docs/fashion-mnist.md): mean log p of the test set
against simpler and shifted images, all through the CLI (`dsmctl prepare` + `dsmctl eval-nll --per-image`).

    python bench/fashion_ood.py RUN --fashion data/fashion-mnist --work ood/ [--n 2000]

Sets (all 1x28x28 uint8, N images each unless smaller):
  fashion-test        the Fashion-MNIST test split itself (the in-distribution reference)
  fashion-train       the first N training images (train vs test NLL)
  digits-8x8          scikit-learn's bundled 8x8 digits (0..16 scaled to 0..255), bilinear resize to 28x28
  demo-patches        the embedded 16x16 grey patches (train + test), bilinear resize to 28x28
  upside-down         the test images flipped vertically
  inverted            255 - test images
  noisy-sigma25       test images + N(0, 25^2) noise, rounded and clipped
  uniform-noise       i.i.d. uniform pixels
  constant-grey       each image one random grey level (the "simplest" images)
Writes ood/summary.json, ood/ood.md (a table) and ood/ood_hist.png (histograms of log p per dim).
Needs scikit-learn for the digits (pip install scikit-learn; not a dsmctl dependency).
"""
import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from dsmctl.data import open_split  # noqa: E402


def resize28(x):
    """N x H x W float in [0, 255] -> N x 1 x 28 x 28 uint8 (bilinear, antialiased when shrinking)."""
    t = torch.as_tensor(np.asarray(x, dtype=np.float32))[:, None]
    t = F.interpolate(t, size=(28, 28), mode="bilinear", align_corners=False, antialias=True)
    return t.round().clamp(0, 255).to(torch.uint8).numpy()


def build_sets(fashion, n, seed=0):
    rng = np.random.default_rng(seed)
    test = np.asarray(open_split(fashion, "test").array[:n])
    train = np.asarray(open_split(fashion, "train").array[:n])
    from sklearn.datasets import load_digits

    digits = load_digits().images[:n] * (255.0 / 16.0)
    demo = np.concatenate([np.asarray(open_split("demo", s).array) for s in ("train", "test")])[:n]
    noisy = np.clip(np.round(test.astype(np.float64) + rng.normal(0, 25, test.shape)), 0, 255).astype(np.uint8)
    return {
        "fashion-test": test,
        "fashion-train": train,
        "digits-8x8": resize28(digits),
        "demo-patches": resize28(demo[:, 0].astype(np.float32)),
        "upside-down": test[:, :, ::-1, :].copy(),
        "inverted": (255 - test).astype(np.uint8),
        "noisy-sigma25": noisy,
        "uniform-noise": rng.integers(0, 256, test.shape, dtype=np.uint8),
        "constant-grey": np.broadcast_to(rng.integers(0, 256, (len(test), 1, 1, 1), dtype=np.uint8),
                                         test.shape).copy(),
    }


def dsmctl(*args):
    return subprocess.run([sys.executable, "-m", "dsmctl", *map(str, args)], check=True, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--fashion", default="data/fashion-mnist")
    ap.add_argument("--work", default="ood")
    ap.add_argument("--n", type=int, default=2000)
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = {}
    for name, arr in build_sets(a.fashion, a.n).items():
        assert arr.dtype == np.uint8 and arr.shape[1:] == (1, 28, 28), (name, arr.shape)
        per = work / f"{name}.csv"
        if not per.exists():
            np.save(work / f"{name}.npy", arr)
            dsmctl("prepare", work / f"{name}.npy", "--out", work / name, "--force")
            dsmctl("eval-nll", a.run, "--data", work / name, "--split", "train", "--stored-constant", "--no-baseline",
                   "--per-image", per, "--batch-size", 500, "--json")
        with open(per) as f:
            bpd = np.array([float(r["bits_per_dim"]) for r in csv.DictReader(f)])
        rows[name] = {"n": len(bpd), "bits_per_dim": float(bpd.mean()),
                      "se": float(bpd.std(ddof=1) / np.sqrt(len(bpd))), "median": float(np.median(bpd)),
                      "frac_below_fashion_test_median": None, "values": bpd}
    ref = np.median(rows["fashion-test"]["values"])
    for r in rows.values():
        r["frac_below_fashion_test_median"] = float((r["values"] < ref).mean())
    table = ["| set | images | NLL bits/dim (mean ± se) | median | share more probable than the median test image |",
             "|---|---|---|---|---|"]
    for name, r in rows.items():
        table.append(f"| {name} | {r['n']} | {r['bits_per_dim']:.3f} ± {r['se']:.3f} | {r['median']:.3f} | "
                     f"{r['frac_below_fashion_test_median']:.1%} |")
    (work / "ood.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    summary = {k: {kk: vv for kk, vv in v.items() if kk != "values"} for k, v in rows.items()}
    (work / "summary.json").write_text(json.dumps({"run": a.run, "n": a.n, "sets": summary}, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    lo = min(np.percentile(r["values"], 0.5) for r in rows.values())
    near = np.linspace(lo, 20, 80)  # left: the in-distribution range, linear
    far = np.logspace(0, np.log10(max(r["values"].max() for r in rows.values()) * 1.05), 80)  # right: all, log x
    for name, r in rows.items():
        a.hist(r["values"], bins=near, histtype="step", density=True, label=name, lw=1.5)
        b.hist(np.clip(r["values"], 1, None), bins=far, histtype="step", label=name, lw=1.5)
    a.set(xlabel="NLL (bits/dim), range up to 20", ylabel="density")
    b.set(xlabel="NLL (bits/dim), log scale, values < 1 shown at 1", ylabel="images", xscale="log")
    a.legend(fontsize=7)
    fig.suptitle("one-shot NLL with the stored constant (lower = more probable)")
    fig.tight_layout()
    fig.savefig(work / "ood_hist.png", dpi=120)


if __name__ == "__main__":
    main()
