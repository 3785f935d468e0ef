"""eval-nll: load a model, pick the evaluation data, run an NLL estimator, add baselines, curves and plots.

Estimators: "one-shot" (the paper's protocol, default), "dequantized" (8-bit data: a bound comparable with
dequantized baselines), "pf-ode" (probability-flow ODE from the same network's grad_y U).
"""
import math
import time
from pathlib import Path

import numpy as np
import torch

from .. import data as data_mod
from .. import units
from ..nn.model_file import load_model
from ..fileio import write_rows
from .likelihood import fit_anchor, normalization_constant, one_shot_nll

ESTIMATORS = ("one-shot", "dequantized", "pf-ode")


def pick_device(device=None):
    from ..device import resolve_device

    return resolve_device(device)


def open_eval_data(meta, source=None, split=None, n_images=None):
    recipe = meta["recipe"]
    source = source or recipe["data"]["source"]
    synthetic = recipe["data"].get("synthetic") if source == recipe["data"]["source"] else None
    data = data_mod.open_split(source, split or recipe["data"]["eval_split"], synthetic)
    if n_images:
        data = data.subset(np.arange(min(n_images, len(data))))
    return data, source, synthetic


def eval_nll(ckpt, source=None, split=None, t=None, t_max=None, anchor=None, n_images=None, batch_size=None,
             seed=None, device=None, baseline=True, per_image=None, stored_constant=False, weights="auto", *,
             estimator="one-shot", draws=4, ode=None, denoising=None, plots=None, log=None, consistency=False):
    """Returns a JSON-ready dict: the model's NLL with its protocol, and baselines where available.

    ode: {t_min, rtol, atol, probes (None = exact trace), max_steps}; denoising: {psnrs, denoiser (a
    checkpoint or None)}; plots: a directory for PNGs; log: a callable for progress lines; consistency: also
    predict the PF-ODE - one-shot gap from the mean heat-equation residual (nll/consistency.py).
    """
    from ..engine.precision import exact_fp32

    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator {estimator!r}: expected one of {', '.join(ESTIMATORS)}")
    with exact_fp32():  # no TF32 in evaluation, whatever the process-wide setting
        return _eval_nll(ckpt, source, split, t, t_max, anchor, n_images, batch_size, seed, device, baseline,
                         per_image, stored_constant, weights, estimator, draws, ode, denoising, plots, log, consistency)


def _eval_nll(ckpt, source, split, t, t_max, anchor, n_images, batch_size, seed, device, baseline, per_image,
              stored_constant, weights, estimator, draws, ode, denoising, plots, log, consistency):
    log = log or (lambda *_: None)
    device = pick_device(device)
    model, meta = load_model(ckpt, device, weights)
    is_denoiser = meta["recipe"]["model"]["kind"] == "denoiser"
    if is_denoiser and estimator != "pf-ode":
        raise ValueError(f"{ckpt}: a denoiser (score-network) model has no energy, hence no {estimator} NLL; "
                         "use --estimator pf-ode (it needs only grad_y)")
    ev = meta["recipe"]["eval"]
    t = ev["t"] if t is None else t
    if estimator == "dequantized" and t:
        raise ValueError("--estimator dequantized evaluates clean 8-bit images (t = 0); drop --t/--psnr")
    t_max, anchor = t_max or ev["t_max"], anchor or ev["anchor"]
    n_images = n_images or ev["n_images"]
    batch_size, seed = batch_size or ev["batch_size"], ev["seed"] if seed is None else seed
    data, source, synthetic = open_eval_data(meta, source, split, n_images)
    if tuple(data.shape) != tuple(meta["shape"]):
        raise ValueError(f"{source}: examples of shape {tuple(data.shape)}, but the model was trained on {tuple(meta['shape'])}")
    if estimator == "dequantized" and data.quantization_bits != 8:
        raise ValueError(f"{data.name}: --estimator dequantized needs 8-bit image data, this split is continuous")

    out = {"model": str(ckpt), "step": meta.get("step"), "estimator": estimator, "seconds": {}}
    kw = dict(t=t, t_max=t_max, batch_size=batch_size, seed=seed, device=device)
    constant = None
    if not is_denoiser:
        norm = meta.get("normalization")
        if stored_constant:
            if not norm:
                raise ValueError(f"{ckpt}: no stored normalization constant; drop --stored-constant")
            constant, kw["t_max"], anchor = (norm["constant"], norm["stderr"]), norm["t_max"], norm["anchor"]
        else:
            constant = normalization_constant(model, data, kw["t_max"], anchor, batch_size, seed, device)
        t0 = time.time()
        res1, idx, nll = one_shot_nll(model, data, anchor=anchor, constant=constant, return_per_image=True, **kw)
        out["seconds"]["one-shot"] = time.time() - t0
        out["one_shot"] = res1.to_dict()
        chosen, extra = (res1, idx, nll), {}

    if estimator == "dequantized":
        from .dequantize import dequantized_nll

        t0 = time.time()
        chosen = dequantized_nll(model, data, draws, kw["t_max"], anchor, batch_size, seed, device, constant=constant,
                                 return_per_image=True)
        out["seconds"]["dequantized"] = time.time() - t0
    elif estimator == "pf-ode":
        from .pfode import anchor_prior, pf_ode_nll

        o = dict(ode or {})
        t_min = o.get("t_min") or meta["recipe"]["noise"]["t_min"]
        probes = o["probes"] if "probes" in o else (None if data.d <= 64 else 1)
        fit_on = data_mod.open_split(source, meta["recipe"]["data"]["train_split"], synthetic) if anchor == "gaussian" else None
        prior = anchor_prior(anchor, fit_on, data.shape)
        res, idx, energy, nfe, status = pf_ode_nll(
            model, data, prior, t_min, kw["t_max"], o.get("rtol", 1e-5), o.get("atol", 1e-5), probes, batch_size, seed,
            device, max_steps=o.get("max_steps", 1000), prior_name=prior_text(anchor, kw["t_max"]),
            progress=lambda k, n: log(f"[pf-ode] {k}/{n} images"), noisy_t=t)
        out["seconds"]["pf-ode"] = res.seconds
        chosen, extra = (res, idx, energy), {"nfe": nfe.tolist(), "status": status.tolist()}
        if constant is not None and not t:  # the network's energy at the ODE's start: separates t_min -> 0
            u = clean_energies(model, data, t_min, batch_size, device)
            ok = status == 0
            out["energy_at_t_min"] = {"t": t_min, "bits_per_dim": units.bits_per_dim(
                u[ok].mean().item() + constant[0], data.d, data.quantization_bits),
                "note": "mean U(x, t_min) + c over the converged images: the one-shot formula at the ODE's start"}
    result, idx, nll = chosen
    trained = meta["recipe"]["noise"]
    # The paper's embedding of raw t is flat for t << 1 (t = 0 reads like t_min); the logt one reads
    # log(t + 1e-9) (nn/unet.py), so t = 0 is only safe when t_min is near 1e-9.
    if estimator != "pf-ode" and (trained["t_min"] + 1e-9) > 2 * (t + 1e-9) \
            and meta["recipe"]["model"]["embedding"] == "logt" and meta["recipe"]["model"]["kind"] != "radial":
        out["warning"] = (f"t={t:g} is below the trained noise range [{trained['t_min']:g}, {trained['t_max']:g}]: the "
                          "network extrapolates there (log t embedding); compare --estimator pf-ode, which reports the energy at t_min")
    out["nll"] = result.to_dict()
    used = meta.get("weights", "raw")
    ema = meta.get("ema") or {}
    used_text = f"ema (decay {ema.get('decay')}, {ema.get('updates')} updates)" if used == "ema" else used
    out["weights"] = used
    out["protocol"] = f"{protocol_text(estimator, result)}, {used_text} weights"
    if estimator == "one-shot":
        out.pop("one_shot")

    if per_image:
        write_per_image(per_image, idx, nll, data.d, data.quantization_bits if not t else None, extra)
        out["per_image"] = str(per_image)
    if plots:
        out["plots"] = draw_plots(plots, data, idx, nll, estimator, ckpt)

    truth = data_mod.true_density(source, synthetic)
    if truth is not None:
        out["truth"] = one_shot_nll(truth, data, constant=(0.0, 0.0), anchor="exact", **kw).to_dict()
    elif baseline and data.d <= 4096:
        train = data_mod.open_split(source, meta["recipe"]["data"]["train_split"], synthetic)
        gauss = fit_anchor(train)
        name = f"Gaussian fitted to {train.name} ({len(train)} examples)"
        if estimator == "dequantized":
            from .dequantize import dequantized_nll

            b = dequantized_nll(gauss, data, draws, kw["t_max"], "exact", batch_size, seed, None, constant=(0.0, 0.0))
        else:
            b = one_shot_nll(gauss, data, constant=(0.0, 0.0), anchor="exact", **{**kw, "device": None})
        out["baseline"] = {"name": name, **b.to_dict()}

    if consistency:
        if is_denoiser:
            raise ValueError(f"{ckpt}: a denoiser model has no dU/dt; --consistency needs an energy model")
        out["consistency"] = run_consistency(model, data, meta["recipe"]["noise"]["t_min"], kw["t_max"], draws,
                                             batch_size, seed, device)
    if denoising is not None:
        out["denoising"] = run_denoising(model, ckpt, data, denoising, batch_size, seed, device, plots,
                                         "denoiser" if is_denoiser else "energy")
    return out


@torch.no_grad()
def clean_energies(model, data, t, batch_size, device):
    """U(x, t) at the clean images x (no noise added), nats per image."""
    return torch.cat([model(x, t, need=("energy",)).energy.double().cpu() for _, x in data.batches(batch_size, device)])


def run_consistency(model, data, t_min, t_max, draws, batch_size, seed, device, per_decade=4):
    """Predicted PF-ODE - one-shot gap over [t_min, t_max] from the Stein-form mean heat-equation residual."""
    from .consistency import stein_residual

    n = max(2, round(per_decade * math.log10(t_max / t_min)) + 1)
    ts = np.logspace(math.log10(t_min), math.log10(t_max), n)
    t0 = time.time()
    rows, gap = stein_residual(model, data, ts, draws, seed, batch_size, device)
    return {"predicted_gap_bits_per_dim": gap["bits_per_dim"], "stderr": gap["stderr"], "rows": rows,
            "seconds": time.time() - t0, "protocol": f"mean t * (dU/dt - Lap U/2 + |grad U|^2/2) over noisy images "
            f"(Stein form), {n} levels log-spaced in [{t_min:g}, {t_max:g}], {draws} draws, {len(data)} images of "
            f"{data.name}, seed {seed}; integrated over log t: the first-order PF-ODE - one-shot difference"}


def run_denoising(model, ckpt, data, opts, batch_size, seed, device, plots=None, kind="energy"):
    from ..analysis.denoising import DEFAULT_PSNRS, denoising_curve

    psnrs = opts.get("psnrs") or DEFAULT_PSNRS
    curves = {f"{model_label(ckpt)} ({kind})": denoising_curve(model, data, psnrs, batch_size, seed, device)}
    if opts.get("denoiser"):
        den, dmeta = load_model(opts["denoiser"], device, opts.get("weights", "auto"))
        curves[f"{model_label(opts['denoiser'])} ({dmeta['recipe']['model']['kind']}, --denoiser)"] = denoising_curve(den, data, psnrs, batch_size, seed, device)
    res = {"curves": curves, "protocol": f"noise keyed by dataset index (seed {seed}), {len(data)} images of "
           f"{data.name}; output PSNR per image, no clipping, mean over images"}
    if plots:
        from ..analysis import plots as P

        res["plot"] = str(P.denoising_curves(curves, Path(plots) / "denoising.png", f"denoising, {data.name}"))
    return res


def draw_plots(directory, data, idx, nll, estimator, ckpt):
    from ..analysis import plots as P

    directory = Path(directory)
    ok = torch.isfinite(nll)
    log_p = units.log_p_db_per_dim(nll[ok].numpy(), data.d)
    title = f"{model_label(ckpt)}: {estimator} log p, {data.name}"
    hist = P.log_p_histogram(log_p, directory / "log_p_histogram.png", title)
    # dataset index -> position in this view, to fetch the images themselves
    where = {int(i): p for p, i in enumerate(data.index(np.arange(len(data))))}
    pos = np.array([where[int(i)] for i in idx[ok].tolist()])
    order = np.argsort(-log_p)
    pick = order[np.unique(np.linspace(0, len(order) - 1, min(12, len(order))).round().astype(int))]
    images = data.batch(pos[pick]).numpy()
    strip = P.image_strip(images, log_p[pick], directory / "log_p_strip.png", title)
    return [str(hist), str(strip)]


def model_label(ckpt):
    """A short name for a model path: the run directory's name rather than 'model.safetensors'."""
    p = Path(str(ckpt))
    return p.parent.name if p.name.endswith(".safetensors") and p.parent.name else p.name


def prior_text(anchor, t_max):
    return f"N(0, {t_max:g} I)" if anchor == "paper" else f"N(mean, Cov + {t_max:g} I) fitted to the training split"


def protocol_text(estimator, r):
    if estimator == "dequantized":
        return (f"dequantized NLL (upper bound), {r.draws} uniform draws per image keyed by index (seed {r.seed}), "
                f"{r.convention}; constant c={r.constant:.6g}±{r.constant_stderr:.2g} nats at t_max={r.t_max:g} "
                f"({r.anchor} anchor), {r.n_images} images of {r.data} (fingerprint {r.data_fingerprint})")
    if estimator == "pf-ode":
        div = "exact trace" if r.divergence == "exact" else f"Hutchinson, {r.probes} Rademacher probe(s) per image (seed {r.seed})"
        quant = f", +{r.quantization_bits} bits/dim for {r.quantization_bits}-bit data" if r.quantization_bits else ""
        bad = f"; {r.n_images - r.n_converged} image(s) NOT converged, excluded" if r.n_converged < r.n_images else ""
        start = (f"cross-entropy of the noisy images at t={r.noisy_t:g} (noise keyed by index as the one-shot's), "
                 f"ODE from t={r.t_min:g}" if r.noisy_t else f"log p_t_min(x) of the clean images, t_min={r.t_min:g}")
        return (f"PF-ODE NLL: {start} to t_max={r.t_max:g}, prior {r.prior}; divergence by "
                f"{div}; Dormand-Prince 5(4) in log t, rtol={r.rtol:g} atol={r.atol:g}; {r.nfe_mean:.1f} function "
                f"evaluations per image (max {r.nfe_max}); {r.n_converged}/{r.n_images} images of {r.data} "
                f"(fingerprint {r.data_fingerprint}){quant}{bad}")
    quant = f"+{r.quantization_bits} bits/dim for {r.quantization_bits}-bit data" if r.quantization_bits else "continuous (no +8)"
    return (f"one-shot NLL at t={r.t:g} (PSNR {units.t_to_psnr(r.t):.1f} dB), constant c={r.constant:.6g}"
            f"±{r.constant_stderr:.2g} nats at t_max={r.t_max:g} ({r.anchor} anchor), {r.n_images} images of "
            f"{r.data} (fingerprint {r.data_fingerprint}), noise seed {r.seed}, {quant}")


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


def summary_lines(res, ckpt):
    """Human-readable report of eval_nll's result: [(text, style or None)], for the CLI to print."""
    out = []
    n = res["nll"]
    out.append((f"NLL {n['bits_per_dim']:.4f} ± {n['bits_per_dim_stderr']:.4f} bits/dim  ({n['nats_per_dim']:.4f} "
                f"nats/dim, log p {n['log_p_db_per_dim']:.3f} dB/dim)  [{res['estimator']}]  {ckpt}", "bold"))
    out.append((f"  protocol: {res['protocol']}", None))
    if "warning" in res:
        out.append((f"  warning: {res['warning']}", "yellow"))
    for bad in n.get("not_converged", [])[:10]:
        out.append((f"  not converged: image {bad['index']} ({bad['reason']})", "yellow"))
    if "one_shot" in res:
        o = res["one_shot"]
        out.append((f"  one-shot: {o['bits_per_dim']:.4f} ± {o['bits_per_dim_stderr']:.4f} bits/dim; "
                    f"{res['estimator']} − one-shot = {n['bits_per_dim'] - o['bits_per_dim']:+.4f} bits/dim", None))
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
