"""The valid Fashion-MNIST bound against training CPU-hours, with Glow's published 3.14 and the 3.6 target (one PNG).

    python bench/bound_cpu_plot.py OUT.png [--curve LABEL=DIR:CPU_S_PER_STEP ...] [--point LABEL=BOUND_JSON:CPU_S ...]
        [--extrapolate LABEL:PER_DOUBLING]

--curve: a `bench/bound_curve.sh` output folder (curve-step-*.json; bounds, or PF-ODE results with CURVE_PF=1),
  x = step × CPU seconds per step.
--point: one `dsmctl eval-nll --json` result (the bound or dequantized PF-ODE of a finished run), x = its training
  CPU seconds.
--extrapolate: a dashed line from the point LABEL falling PER_DOUBLING bits/dim per doubling of CPU time, drawn
  until it crosses 3.14 (an extrapolation, labelled as one, never a measurement). Prints the CPU-hours at which
  the line crosses 3.6 and 3.14.
"""
import argparse
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

GLOW, TARGET = 3.14, 3.6


def bound_of(path):
    return json.loads(Path(path).read_text())["nll"]["bits_per_dim"]


def curve(spec):
    label, _, rest = spec.partition("=")
    folder, _, per_step = rest.rpartition(":")
    xs, ys, n = [], [], 0
    for f in sorted(Path(folder).glob("curve-step-*.json")):
        step = int(f.stem.rsplit("-", 1)[1])
        xs.append(step * float(per_step) / 3600)
        ys.append(bound_of(f))
        n = json.loads(f.read_text())["nll"]["n_images"]
    return f"{label} (checkpoints, {n:,} images)", xs, ys


def point(spec):
    label, _, rest = spec.partition("=")
    path, _, cpu = rest.rpartition(":")
    return label, float(cpu) / 3600, bound_of(path)


def crossing(x0, y0, per_doubling, level):
    """CPU-hours at which y0 − per_doubling·log2(x/x0) reaches level."""
    return x0 * 2 ** ((y0 - level) / per_doubling)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--curve", action="append", default=[])
    ap.add_argument("--point", action="append", default=[])
    ap.add_argument("--extrapolate", default=None)
    a = ap.parse_args()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for spec in a.curve:
        label, xs, ys = curve(spec)
        ax.plot(xs, ys, "o-", ms=3, alpha=0.6, label=label)
    points = {}
    for spec in a.point:
        label, x, y = point(spec)
        points[label] = (x, y)
        ax.plot([x], [y], "s", ms=7, label=f"{label}: {y:.3f}")
        print(f"{label}: {x:.3f} CPU-h, bound {y:.4f}")
    if a.extrapolate:
        label, _, per = a.extrapolate.rpartition(":")
        per = float(per)
        x0, y0 = points[label]
        x_glow, x_target = crossing(x0, y0, per, GLOW), crossing(x0, y0, per, TARGET)
        xs = [x0 * 2 ** (k / 20) for k in range(int(20 * math.log2(x_glow / x0)) + 2)]
        ax.plot(xs, [y0 - per * math.log2(x / x0) for x in xs], "k--", lw=1,
                label=f"extrapolation, −{per} per doubling (not measured)")
        print(f"extrapolation from {label}: 3.6 at {x_target:.1f} CPU-h, 3.14 at {x_glow:.1f} CPU-h")
    ax.axhline(GLOW, color="C3", lw=1, label="Glow, published (3.14)")
    ax.axhline(TARGET, color="C2", lw=1, ls=":", label="target of a ≤ 1 CPU-hour recipe (3.6)")
    ax.set(xscale="log", xlabel="training CPU-hours (one thread)", ylabel="bits/dim, valid upper bound",
           title="Fashion-MNIST test: dequantized bound against training compute (ours)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(a.out, dpi=120)
    print(a.out)


if __name__ == "__main__":
    main()
