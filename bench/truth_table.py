"""The gsm16 comparison table (docs/validation.md) from eval-nll per-image files of runs on synthetic data.

    python bench/truth_table.py DIR RUN [RUN ...] [--base RUN]

For each RUN reads DIR/RUN.os.csv (one-shot, all test images) and DIR/RUN.pf.csv (PF-ODE, the first images),
both with the `truth_energy` column eval-nll writes for closed-form data, and prints in nats/dim, paired over the
same images: one-shot − truth (all), one-shot − truth, PF-ODE − truth and PF-ODE − one-shot (the PF-ODE's
images), and with --base the change of each against the base run, paired image by image.
"""
import argparse
import csv

from paired import mean_se  # bench/paired.py, beside this script


def read(path):
    with open(path) as f:
        rows = [r for r in csv.DictReader(f) if r.get("status", "0") in ("0", "")]
    return {int(r["index"]): (float(r["energy"]), float(r["truth_energy"])) for r in rows}


def quantities(run_dir, run, d):
    os_, pf = read(f"{run_dir}/{run}.os.csv"), read(f"{run_dir}/{run}.pf.csv")
    keys = sorted(set(os_) & set(pf))
    return {
        "one-shot − truth (all)": {k: (os_[k][0] - os_[k][1]) / d for k in os_},
        "one-shot − truth (PF images)": {k: (os_[k][0] - os_[k][1]) / d for k in keys},
        "PF-ODE − truth": {k: (pf[k][0] - pf[k][1]) / d for k in keys},
        "PF-ODE − one-shot": {k: (pf[k][0] - os_[k][0]) / d for k in keys},
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--base")
    ap.add_argument("--d", type=int, default=256)
    o = ap.parse_args()
    base = quantities(o.dir, o.base, o.d) if o.base else None
    for run in o.runs:
        q = quantities(o.dir, run, o.d)
        cells = []
        for name, v in q.items():
            m, se = mean_se(list(v.values()))
            cell = f"{name} {m:+.4f} ± {se:.4f} (n={len(v)})"
            if base and run != o.base:
                keys = sorted(set(v) & set(base[name]))
                dm, dse = mean_se([v[k] - base[name][k] for k in keys])
                cell += f" [change {dm:+.4f} ± {dse:.4f}]"
            cells.append(cell)
        print(f"{run}: " + "; ".join(cells))


if __name__ == "__main__":
    main()
