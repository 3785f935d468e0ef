"""Loss curves of one or more runs from their metrics.jsonl (space term, time term, total), one PNG.

    python bench/plot_metrics.py OUT.png RUN[=LABEL] [RUN[=LABEL] ...]

Each line of metrics.jsonl is a mean over train.log_every steps (docs/training.md); the x axis is the step,
and a second panel shows the time term, which is three orders of magnitude smaller than the space term.
"""
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read(run):
    rows = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if "loss" in r]


def main(out, runs):
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for spec in runs:
        run, _, label = spec.partition("=")
        rows = read(run)
        steps = [r["step"] for r in rows]
        a.plot(steps, [r["space"] for r in rows], label=label or Path(run).name)
        b.plot(steps, [r["time"] for r in rows], label=label or Path(run).name)
    a.set(xlabel="step", ylabel="space term (per dim)", yscale="log", title="denoising score matching")
    b.set(xlabel="step", ylabel="time term (per dim)", yscale="log", title="time-score matching")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(out)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
