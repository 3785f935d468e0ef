"""Paired difference of two per-image files (`eval-nll --per-image`), matched by dataset index.

    python bench/paired.py B.csv A.csv [--column bits_per_dim]

prints mean(B − A) ± its standard error over the images both files hold (and the count), the way
docs/validation.md reports PF-ODE − one-shot. Rows whose PF-ODE did not converge (status != 0) are dropped.
"""
import argparse
import csv
import json
import math


def read(path, column):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return {int(r["index"]): float(r[column]) for r in rows if r.get("status", "0") in ("0", "", None)}


def mean_se(values):
    """(mean, standard error of the mean) of a list of numbers."""
    n = len(values)
    mean = sum(values) / n
    var = sum((x - mean) ** 2 for x in values) / (n - 1) if n > 1 else float("nan")
    return mean, math.sqrt(var / n)


def paired(b, a):
    keys = sorted(set(a) & set(b))
    mean, se = mean_se([b[k] - a[k] for k in keys])
    return {"n": len(keys), "mean": mean, "se": se}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("b")
    ap.add_argument("a")
    ap.add_argument("--column", default="bits_per_dim")
    o = ap.parse_args()
    r = paired(read(o.b, o.column), read(o.a, o.column))
    print(json.dumps(r))
    print(f"{o.b} − {o.a}: {r['mean']:+.4f} ± {r['se']:.4f} {o.column} over {r['n']} images")


if __name__ == "__main__":
    main()
