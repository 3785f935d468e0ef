"""The Fashion-MNIST bounds table (docs/fashion-mnist.md) from bench/fashion_bounds.sh's outputs, one row per model.

    python bench/bounds_table.py OUT/shipped-s0 OUT/both-s0 ... [--reference OUT/shipped-s0] [--pf-suffix=-pf200]

Columns: the default bound (t chosen on training images, K = 4, all test images), the plug-in beside it, their
paired difference, the bound with p_0 and with K = 64 (first 500 images), the truncated-normal bound (first 1,000),
the dequantized PF-ODE bound and its paired difference with the one-shot bound at the same x + u (where run), and
each model's bound minus the reference model's, paired over the test images.
"""
import argparse
import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from paired import paired, read  # noqa: E402


def load(path):
    try:
        return json.load(open(path))
    except (OSError, ValueError):
        return None


def fmt(v, se=None, digits=3):
    if v is None:
        return "—"
    return f"{v:.{digits}f}" + (f" ± {se:.{digits}f}" if se is not None else "")


def row(out, ref, pf_suffix=""):
    b = load(f"{out}/bound.json")
    if b is None:
        return None
    n, plug = b["nll"], b["one_shot"]
    r = {"model": os.path.basename(out), "bound": fmt(n["bits_per_dim"], n["bits_per_dim_stderr"]),
         "t": f"{n['bound_t']:g}", "n": n["n_images"], "plug": fmt(plug["bits_per_dim"], plug["bits_per_dim_stderr"]),
         "plug_minus_bound": fmt(b["difference"]["bits_per_dim"], b["difference"]["stderr"]),
         "flags": ",".join(f["code"] for f in b.get("flags", [])) or "none"}
    c, c0, tn = load(f"{out}/conv.json"), load(f"{out}/conv_t0.json"), load(f"{out}/truncnorm.json")
    r["k_curve"] = " / ".join(f"{x['bits_per_dim']:.3f}" for x in c["nll"]["convergence"]) if c else "—"
    r["t0"] = " / ".join(f"{x['bits_per_dim']:.3f}" for x in c0["nll"]["convergence"]) if c0 else "—"
    r["truncnorm"] = f"{tn['nll']['bits_per_dim']:.3f} (s = {tn['nll']['proposal_scale']:g})" if tn else "—"
    pf_dir = f"{out}{pf_suffix}"
    pfs = [load(p) for p in sorted(glob.glob(f"{pf_dir}/pf*.json"))]
    pfs = [p for p in pfs if p]
    if pfs:
        rows = {}
        for p in sorted(glob.glob(f"{pf_dir}/pf*.csv")):
            rows.update(read(p, "bits_per_dim"))
        v = list(rows.values())
        m = sum(v) / len(v)
        se = (sum((x - m) ** 2 for x in v) / (len(v) - 1) / len(v)) ** 0.5 if len(v) > 1 else float("nan")
        diffs = [p["difference"] for p in pfs if p.get("difference")]
        nimg = sum(d["n_images"] for d in diffs)
        mean = sum(d["bits_per_dim"] * d["n_images"] for d in diffs) / nimg
        gap_se = sum((d["stderr"] * d["n_images"]) ** 2 for d in diffs) ** 0.5 / nimg  # shards are independent
        r["pf"] = f"{m:.3f} ± {se:.3f} ({len(v)} images)"
        r["pf_gap"] = f"{mean:+.3f} ± {gap_se:.3f} ({nimg} images)"
    else:
        r["pf"] = r["pf_gap"] = "—"
    if ref and os.path.exists(f"{ref}/bound.csv") and ref != out:
        p = paired(read(f"{out}/bound.csv", "bits_per_dim"), read(f"{ref}/bound.csv", "bits_per_dim"))
        r["vs_ref"] = f"{p['mean']:+.3f} ± {p['se']:.3f}"
    else:
        r["vs_ref"] = "—"
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("outs", nargs="+")
    ap.add_argument("--reference")
    ap.add_argument("--pf-suffix", default="", help="read the PF-ODE outputs (pf*.json, pf*.csv) from OUT + SUFFIX")
    o = ap.parse_args()
    cols = [("model", "model"), ("bound", "bound (K=4), test"), ("t", "t of p_t"), ("plug", "plug-in (paper)"),
            ("plug_minus_bound", "plug-in − bound"), ("vs_ref", "bound − reference, paired"),
            ("k_curve", "bound K=1/4/16/64 (500)"), ("t0", "p_0 bound K=1/4/16 (500)"),
            ("truncnorm", "truncnorm K=16 (1,000)"), ("pf", "dequantized PF-ODE"), ("pf_gap", "one-shot − PF-ODE"),
            ("flags", "flags")]
    print("| " + " | ".join(c[1] for c in cols) + " |")
    print("|" + "---|" * len(cols))
    for out in o.outs:
        r = row(out.rstrip("/"), o.reference and o.reference.rstrip("/"), o.pf_suffix)
        if r:
            print("| " + " | ".join(str(r[c[0]]) for c in cols) + " |")


if __name__ == "__main__":
    main()
