"""One table from the JSON files that bench/gpu.sh collects (step, scaling, nll, loader), appended to RESULTS.md.

  python bench/summary.py DIR [--no-append]
"""
import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import append_results, pick_device, print_table  # noqa: E402

PAPER_RATIO = 0.42 / 0.115  # the paper's code: energy vs denoiser s/step at batch 128, one H100


def med(v):
    return statistics.median(v), min(v), max(v)


def step_rows(name, runs):
    rows = []
    for r in runs:
        mem = r.get("memory") or {}
        size = f"{r['side']}px w{r['width_mult']:g} b{r['batch']}"
        for suffix in [s for s in ("", "-reference") if f"energy{s}" in r["times"]]:
            e, d = r["times"][f"energy{suffix}"], r["times"][f"denoiser{suffix}"]
            label = f"{name}{' (reference norm)' if suffix else ''}"
            ratio = med([a[0] / b[0] for a, b in zip(e, d)])
            for kind, t in (("energy", e), ("denoiser", d)):
                m = med([a[1] for a in t])
                peak = mem.get(f"{kind}{suffix}")
                rows.append([f"{label}: {kind} step, {size}", f"{m[0]:.4g} s [{m[1]:.4g}, {m[2]:.4g}]",
                             f"{r['batch'] / m[0]:,.0f} img/s" + (f", peak {peak:,.0f} MiB" if peak else "")])
            verdict = "met" if ratio[0] <= 2.5 else "MISSED"
            rows.append([f"{label}: energy / denoiser (fwd+bwd), {size}",
                         f"{ratio[0]:.2f} [{ratio[1]:.2f}, {ratio[2]:.2f}]",
                         f"target <= 2.5: {verdict} (paper's code {PAPER_RATIO:.1f})"])
        if "energy-reference" in r["times"]:
            for kind in ("energy", "denoiser"):
                sp = med([b[0] / a[0] for a, b in zip(r["times"][kind], r["times"][f"{kind}-reference"])])
                rows.append([f"{name}: {kind} fwd+bwd, reference / fused norm, {size}",
                             f"{sp[0]:.2f} [{sp[1]:.2f}, {sp[2]:.2f}]", "speed-up of nn/fused.py, interleaved"])
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--no-append", action="store_true")
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    d = Path(args.dir)
    table = [["measurement", "median [min, max]", "notes"]]
    for name in ("step", "step-channels-last", "scaling"):
        if (d / f"{name}.json").exists():
            table += step_rows(name, json.loads((d / f"{name}.json").read_text()))
    if (d / "nll.json").exists():
        nll = json.loads((d / "nll.json").read_text())
        for k, v in nll["results"].items():
            table.append([f"nll: {k}", f"{v['bits_per_dim']:.4f} bits/dim", f"{v['evals_per_image']:,.1f} evals/image, "
                          f"{v['seconds']:.3g} s for {nll['n_images']} images"])
        table += [["nll: verdict", "", line] for line in nll["lines"][1:]]
    if (d / "loader.json").exists():
        ld = json.loads((d / "loader.json").read_text())
        for k, v in ld["rates"].items():
            m = med(v)
            table.append([f"loader: {k}", f"{m[0]:,.0f} img/s [{m[1]:,.0f}, {m[2]:,.0f}]",
                          f"{ld['cores']} cores, batch {ld['batch']}, target >= 20,000 (float32 path)"])
    print_table(table, left=(0, 2))
    if not args.no_append:
        device = pick_device("auto")
        append_results("gpu.sh: all benchmarks at the paper's settings", device,
                       [f"raw JSON in {d}", "fp32 (TF32 off), batch 128, 3x64x64, paper UNet (8,649,856 parameters)"],
                       table, args.note)


if __name__ == "__main__":
    main()
