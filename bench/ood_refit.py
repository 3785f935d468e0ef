"""Refit `dsmctl score`'s detector from a finished score run's per_image.csv (its "fit" rows, written since
2026-12-04) with a subset of the feature kinds, and print the AUROC table of every score. No model is run: a run
made with every orientation feature (--transforms vflip,rot90,rot270) answers what the default (vflip) or no
transform would have given, on the same images and noise. Used for docs/ood.md's tables.

    python bench/ood_refit.py runs/loco/score8 --transforms vflip            # a score directory or its CSV(.gz)
    python bench/ood_refit.py runs/loco/score{0..9} --transforms none --sets class --mean
"""
import argparse
import csv
import gzip
from pathlib import Path

import numpy as np

from dsmctl.analysis.ood import metrics
from dsmctl.analysis.ood.detector import ENERGY_KINDS, Detector

BASELINES = ("nll", "bound", "typicality", "complexity", "ratio_base")  # per-image columns kept as written


def read(path):
    p = Path(path)
    if p.is_dir():
        p = next(q for q in (p / "per_image.csv", p / "per_image.csv.gz") if q.is_file())
    with (gzip.open(p, "rt") if p.suffix == ".gz" else open(p)) as f:
        return list(csv.DictReader(f))


def refit(rows, transforms):
    """(detector, {set: {score: (N,) array}}) with the energy features and the named transforms' features."""
    kinds = set(ENERGY_KINDS) | set(transforms)
    names = [n for n in rows[0] if "@" in n and n.partition("@")[0] in kinds]
    sets = {}
    for r in rows:
        sets.setdefault(r["set"], []).append(r)
    if "fit" not in sets:
        raise SystemExit("no 'fit' rows in the CSV: rerun `dsmctl score` (since 2026-12-04 it writes them)")
    values = {s: np.array([[float(r[n]) for n in names] for r in rs]) for s, rs in sets.items()}
    det = Detector.fit(values["fit"], names, t_grid=[0.0])
    out = {}
    for s, rs in sets.items():
        sc = det.score(values[s])
        sc.update({b: np.array([float(r[b]) for r in rs]) for b in BASELINES if b in rs[0] and rs[0][b] != ""})
        out[s] = sc
    return det, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--transforms", default="vflip", help="comma list of transform kinds to keep, or none")
    ap.add_argument("--sets", default="", help="only outlier sets whose name starts with this")
    ap.add_argument("--scores", default="combined,multiscale,orientation,nll,bound,typicality,complexity,ratio_base")
    ap.add_argument("--mean", action="store_true", help="add the mean row over the printed sets")
    a = ap.parse_args()
    keep = [] if a.transforms == "none" else a.transforms.split(",")
    cols = a.scores.split(",")
    print("| run | set | " + " | ".join(cols) + " |\n|---|---|" + "---|" * len(cols))
    acc = []
    for run in a.runs:
        _, sc = refit(read(run), keep)
        for s in sc:
            if s in ("reference", "fit") or not s.startswith(a.sets):
                continue
            row = [metrics.auroc(sc["reference"][c], sc[s][c]) if c in sc[s] else float("nan") for c in cols]
            acc.append(row)
            label = s if s.startswith("class:") else s.split(":")[0]  # digits:FILE -> digits
            print(f"| {Path(run).name} | {label} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    if a.mean and acc:
        print(f"| **mean of {len(acc)}** | | " + " | ".join(f"**{v:.3f}**" for v in np.nanmean(acc, 0)) + " |")


if __name__ == "__main__":
    main()
