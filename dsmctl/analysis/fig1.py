"""Paper Fig. 1 on GSM d = 1000: radial log p slices of the true density and of trained models.

  python -m dsmctl.analysis.fig1 runs/gsm-dual runs/gsm-single --out docs/img/gsm1000-radial.png

Each model is normalized with the constant stored at the end of its training (recipe eval section),
evaluated at the recipe's eval.t; prints a table of log p (dB/dim) at radius 0, 1, 2, 4 (the paper's).
"""
import argparse
import json

import numpy as np
import torch

from ..nn.model_file import load_model
from ..data import true_density
from .plots import radial_slices
from .radial import radial_log_p

PAPER = {"true": [-3.99, -6.17, -10.56, -12.19], "dual": [-3.94, -6.11, -10.50, -12.10],
         "single": [-12.91, -15.05, -16.73, -18.39]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="run dirs or model files (label = loss.mode)")
    p.add_argument("--out", default="docs/img/gsm1000-radial.png")
    args = p.parse_args(argv)
    radii = np.linspace(0, 5, 101)
    table_r = [0.0, 1.0, 2.0, 4.0]
    curves, table = {}, {}
    truth = None
    for run in args.runs:
        model, meta = load_model(run)
        recipe = meta["recipe"]
        d, t = int(np.prod(meta["shape"])), recipe["eval"]["t"]
        if truth is None:
            truth = true_density(recipe["data"]["source"], recipe["data"].get("synthetic"))
            curves["true"] = radial_log_p(truth, d, t, radii, dtype=torch.float64).numpy()
            table["true"] = radial_log_p(truth, d, t, table_r, dtype=torch.float64).tolist()
        label = recipe["loss"]["mode"]
        c = meta["normalization"]["constant"]
        curves[label] = radial_log_p(model, d, t, radii, constant=c).numpy()
        table[label] = radial_log_p(model, d, t, table_r, constant=c).tolist()
    radial_slices(curves, radii, args.out, f"GSM d={d}: log p at t={t:g} along a random direction")
    print(f"log p (dB/dim) at t={t:g}, radius ||y||/sqrt(d) = {table_r}; paper's values in brackets")
    for label, values in table.items():
        ref = PAPER.get(label)
        print(f"  {label:>6}: " + "  ".join(f"{v:8.3f}" + (f" [{r:.2f}]" if ref else "") for v, r in zip(values, ref or values)))
    print(json.dumps({"radii": table_r, "log_p_db_per_dim": table, "figure": args.out}))


if __name__ == "__main__":
    main()
