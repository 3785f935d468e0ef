"""eval-nll's report: the human summary and the per-image file (numbers come from nll/evaluate.py; the figures are
drawn by dsmctl/evaluation.py)."""
from pathlib import Path

from .. import units
from ..fileio import write_rows


def summary_lines(res, ckpt):
    """Human-readable report of eval_nll's result: [(text, style or None)], for the CLI to print."""
    out = []
    n = res["nll"]
    kind = ("upper bound" if n.get("is_bound") or n.get("dequantized") else
            "plug-in, not a bound" if n.get("quantization_bits") and res["estimator"] == "one-shot" else None)
    out.append((f"NLL {n['bits_per_dim']:.4f} ± {n['bits_per_dim_stderr']:.4f} bits/dim  ({n['nats_per_dim']:.4f} "
                f"nats/dim, log p {n['log_p_db_per_dim']:.3f} dB/dim)  [{res['estimator']}"
                f"{', ' + kind if kind else ''}]  {ckpt}", "bold"))
    out.append((f"  protocol: {res['protocol']}", None))
    for f in res.get("flags", []):
        out.append((f"  FLAG {f['code']}: {f['message']}", "bold red"))
    if "warning" in res:
        out.append((f"  warning: {res['warning']}", "yellow"))
    if n.get("convergence") and len(n["convergence"]) > 1:
        out.append(("  bound by number of draws K: " + "  ".join(
            f"K={r['draws']}: {r['bits_per_dim']:.4f}" for r in n["convergence"]) +
            f"  (Jensen, K={n['draws']}: {n['jensen_bits_per_dim']:.4f})", None))
    if n.get("chosen_on"):
        out.append((f"  chosen: {n['chosen_on']}", None))
    for bad in n.get("not_converged", [])[:10]:
        out.append((f"  not converged: image {bad['index']} ({bad['reason']})", "yellow"))
    if "one_shot" in res:
        o = res["one_shot"]
        out.append((f"  one-shot: {o['bits_per_dim']:.4f} ± {o['bits_per_dim_stderr']:.4f} bits/dim "
                    f"({o.get('label', 'one-shot')})", None))
        if "one_shot_dequantized" in res:
            q = res["one_shot_dequantized"]
            out.append((f"  one-shot bound at the ODE's start (t = {q['bound_t']:g}, the same x + u): "
                        f"{q['bits_per_dim']:.4f} ± {q['bits_per_dim_stderr']:.4f} bits/dim", None))
        diff = res.get("difference")
        if diff:
            what = diff["protocol"].split(", paired")[0]
            out.append((f"  difference: {what} = {diff['bits_per_dim']:+.4f} ± {diff['stderr']:.4f} bits/dim "
                        f"(paired, {diff['n_images']} images)", None))
    if "energy_at_t_min" in res:
        e = res["energy_at_t_min"]
        out.append((f"  energy at t_min={e['t']:g} (one-shot formula at the ODE's start): {e['bits_per_dim']:.4f} bits/dim", None))
    for name, sec in res["seconds"].items():
        out.append((f"  time: {name} {sec:.1f} s", None))
    for key in ("baseline", "truth"):
        if key in res:
            b = res[key]
            label = b.get("name", "true density (closed form)")
            out.append((f"  {key}: {b['bits_per_dim']:.4f} bits/dim ({b['nats_per_dim']:.4f} nats/dim)  {label}; "
                        f"model − {key} = {n['bits_per_dim'] - b['bits_per_dim']:+.4f} bits/dim", None))
    if "vs_truth" in res:
        v = res["vs_truth"]
        out.append((f"  per image against the truth: model − truth {v['mean_nats_per_dim']:+.4f} ± {v['stderr']:.4f} "
                    f"nats/dim (RMS {v['rms_nats_per_dim']:.4f}), correlation {v['correlation']:.4f} over "
                    f"{v['n_images']} images", None))
    if "consistency" in res:
        c = res["consistency"]
        worst = max(c["rows"], key=lambda r: abs(r["t_residual"]))
        out.append((f"  consistency: PF-ODE − one-shot predicted {c['predicted_gap_bits_per_dim']:+.4f} ± {c['stderr']:.4f} "
                    f"bits/dim; largest t·residual {worst['t_residual']:+.2f} nats/image at t={worst['t']:.2g} "
                    f"({c['seconds']:.0f} s)", None))
        out.append((f"    protocol: {c['protocol']}", None))
    if "denoising" in res:
        curves = res["denoising"]["curves"]
        first = next(iter(curves.values()))
        out.append(("  denoising (output PSNR, dB): input " + "  ".join(f"{r['psnr_in']:6.1f}" for r in first), None))
        for name, rows in curves.items():
            out.append((f"    {name}: " + "  ".join(f"{r['psnr_out']:6.2f}" for r in rows), None))
    for p in res.get("plots", []) + ([res["denoising"]["plot"]] if "plot" in res.get("denoising", {}) else []):
        out.append((f"  plot: {p}", None))
    return out


def write_per_image(path, idx, nll, d, qbits, extra=None):
    """CSV or JSONL (by suffix) keyed by dataset index: energy (nats), log p (dB/dim), bits/dim (+ extra columns)."""
    extra = extra or {}
    rows = []
    for k, (i, u) in enumerate(zip(idx.tolist(), nll.tolist())):
        row = {"index": int(i), "energy": float(u), "log_p_db_per_dim": units.log_p_db_per_dim(float(u), d),
               "bits_per_dim": units.bits_per_dim(float(u), d, qbits)}
        row.update({name: values[k] for name, values in extra.items()})
        rows.append(row)
    write_rows(path, rows)


def model_label(ckpt):
    """A short name for a model path: the run directory's name rather than 'model.safetensors'."""
    p = Path(str(ckpt))
    return p.parent.name if p.name.endswith(".safetensors") and p.parent.name else p.name
