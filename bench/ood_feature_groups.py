"""AUROC of Mahalanobis scores over groups of `dsmctl score`'s features (nll@t, grad2@t, tdt@t, all), from a
finished score directory: its fitted detector (standardization and shrunk covariance; a group uses the covariance's
sub-block) and its per-image features. No model is run. Exploration of which features carry a shift (docs/ood.md).

    python bench/ood_feature_groups.py runs/ood-gpu-energy [more score dirs]     # per_image.csv(.gz) + detector
"""
import argparse
import csv
import gzip
from pathlib import Path

import numpy as np

from dsmctl.analysis.ood import metrics
from dsmctl.analysis.ood.detector import Detector

GROUPS = ("nll@", "grad2@", "tdt@", "")  # "" = every used feature (= multiscale for a detector without transforms)


def group_scores(det, z, prefix):
    cols = [i for i, n in enumerate(det.names) if n.startswith(prefix) and det.used[i]]
    prec = np.linalg.inv(det.cov[np.ix_(cols, cols)])
    zc = z[:, cols]
    return np.sqrt(np.maximum(np.einsum("ni,ij,nj->n", zc, prec, zc), 0))


def table(score_dir):
    d = Path(score_dir)
    det = Detector.load(d / "detector.safetensors")
    f = d / "per_image.csv"
    rows = list(csv.DictReader(gzip.open(f.with_suffix(".csv.gz"), "rt") if not f.exists() else open(f)))
    sets = {}
    for r in rows:
        sets.setdefault(r["set"], []).append([float(r[n]) for n in det.names])
    z = {k: det.standardized(np.array(v)) for k, v in sets.items()}
    ref = {g: group_scores(det, z["reference"], g) for g in GROUPS}
    return {k: {g or "all": metrics.auroc(ref[g], group_scores(det, zz, g)) for g in GROUPS}
            for k, zz in z.items() if k not in ("reference", "fit")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="+")
    for d in ap.parse_args().dirs:
        for k, row in table(d).items():
            print(f"{d}  {k:14s} " + "  ".join(f"{g} {a:.3f}" for g, a in row.items()))


if __name__ == "__main__":
    main()
