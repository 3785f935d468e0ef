"""eval-nll: check the request, load the model, pick the evaluation data, run an estimator, add baselines and extras.

Estimators (ESTIMATORS below): "one-shot" (the paper's protocol, default), "dequantized" (8-bit data: a bound
comparable with dequantized baselines), "pf-ode" (probability-flow ODE from the same network's grad_y U).
A new estimator is one module with `estimate(model, data, request) -> Estimate` (nll/request.py) and one line here.
"""
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .. import data as data_mod
from ..nn.model_file import load_model, read_meta
from . import dequantize, one_shot, pfode
from .likelihood import fit_anchor, normalization_constant
from .report import draw_plots, model_label, summary_lines, write_per_image  # noqa: F401  (eval-nll's report)
from .request import EvalRequest, RequestError

ESTIMATORS = {"one-shot": one_shot, "dequantized": dequantize, "pf-ode": pfode}
# No normalized model gives an NLL beyond this magnitude on real data (a density 2^10000 times the uniform one per
# dimension, or that small): such a number is a broken model (diverged weights, a NaN constant), never a result.
MAX_ABS_BITS_PER_DIM = 1e4


class ResultError(ValueError):
    """An NLL that no normalized model can give (non-finite, or beyond MAX_ABS_BITS_PER_DIM): never printed."""


def check_result(result, model, what="NLL"):
    """Refuse (ResultError naming the model and why) an NLLResult that is not a possible result."""
    for name in ("constant", "nats_per_dim", "bits_per_dim"):
        value = getattr(result, name, None)  # a PF-ODE result has no constant
        if value is not None and not math.isfinite(value):
            raise ResultError(f"{model}: the {what} came out non-finite ({name} {value}); expected finite numbers "
                              f"(a diverged or damaged model: check its training log, or retrain)")
    if abs(result.bits_per_dim) > MAX_ABS_BITS_PER_DIM:
        raise ResultError(f"{model}: the {what} came out {result.bits_per_dim:.3g} bits/dim, beyond +-"
                          f"{MAX_ABS_BITS_PER_DIM:g}, which no normalized model gives (a diverged model, e.g. a "
                          f"learning rate far too high: check its training log, or retrain)")
    return result


def pick_device(device=None):
    from ..device import resolve_device

    return resolve_device(device)


def open_eval_data(meta, source=None, split=None, n_images=None, start=0):
    """The evaluation split, or its images start .. start + n_images - 1 (dataset indices kept: noise, probes and
    per-image rows of a shard equal those of the full run)."""
    recipe = meta["recipe"]
    source = source or recipe["data"]["source"]
    synthetic = recipe["data"].get("synthetic") if source == recipe["data"]["source"] else None
    split = split or recipe["data"]["eval_split"]
    data = data_mod.open_split(source, split, synthetic)
    if start and start >= len(data):
        raise RequestError(f"--start {start}: the {split} split of {source} has only {len(data)} images")
    if n_images or start:
        data = data.subset(np.arange(start, min(start + (n_images or len(data)), len(data))))
    return data, source, synthetic


def eval_nll(ckpt, log=None, **options):
    """evaluate(EvalRequest(ckpt, **options)): keyword options as EvalRequest's fields."""
    return evaluate(EvalRequest(ckpt, **options), log)


def evaluate(request, log=None):
    """Returns a JSON-ready dict: the model's NLL with its protocol, baselines where available, and the extras
    asked for (per-image file, plots, consistency prediction, denoising curve). log: a callable for progress lines."""
    from ..engine.precision import exact_fp32

    request.check(ESTIMATORS)
    with exact_fp32():  # no TF32 in evaluation, whatever the process-wide setting
        return _evaluate(request, log or (lambda *_: None))


def _evaluate(request, log):
    ckpt = request.model
    device = pick_device(request.device)
    model, meta = load_model(ckpt, device, request.weights)
    estimator = ESTIMATORS[request.estimator]
    is_denoiser = meta["recipe"]["model"]["kind"] == "denoiser"
    if is_denoiser and getattr(estimator, "NEEDS_ENERGY", True):
        raise RequestError(f"{ckpt}: a denoiser (score-network) model has no energy, hence no {request.estimator} NLL; "
                           "use --estimator pf-ode (it needs only grad_y)")
    if is_denoiser and request.consistency:
        raise RequestError(f"{ckpt}: a denoiser model has no dU/dt; --consistency needs an energy model")
    req = replace(request.resolved(meta), device=device, log=log)
    data, _, _ = open_eval_data(meta, req.source, req.split, req.n_images, req.start)
    if tuple(data.shape) != tuple(meta["shape"]):
        raise ValueError(f"{req.source}: examples of shape {tuple(data.shape)}, but the model was trained on "
                         f"{tuple(meta['shape'])}")
    if req.wants_denoising and req.denoiser:
        check_denoiser(req.denoiser, meta)
    if req.stored_constant and not is_denoiser:
        norm = meta.get("normalization")
        if not norm:
            raise RequestError(f"{ckpt}: no stored normalization constant; drop --stored-constant")
        req = replace(req, constant=(norm["constant"], norm["stderr"]), t_max=norm["t_max"], anchor=norm["anchor"])
    if hasattr(estimator, "check"):
        estimator.check(data, req)
    if not is_denoiser and req.constant is None:
        req = replace(req, constant=normalization_constant(model, data, req.t_max, req.anchor, req.batch_size, req.seed,
                                                           device))

    out = {"model": str(ckpt), "step": meta.get("step"), "estimator": req.estimator, "start": req.start, "seconds": {}}
    if not is_denoiser:  # the one-shot number always, as the reference the other estimators are compared with
        reference = one_shot.estimate(model, data, req)
        check_result(reference.result, ckpt, "one-shot NLL")
        out["seconds"]["one-shot"] = reference.seconds
        out["one_shot"] = reference.result.to_dict()
    if req.estimator == "one-shot":
        chosen = reference
    else:
        chosen = estimator.estimate(model, data, req)
        check_result(chosen.result, ckpt, f"{req.estimator} NLL")
        out["seconds"][req.estimator] = chosen.seconds
    out.update(chosen.report)
    warning = extrapolation_warning(meta, req.t) if getattr(estimator, "EVALUATES_AT_T", True) else None
    if warning:
        out["warning"] = warning
    out["nll"] = chosen.result.to_dict()
    out["weights"], used_text = weights_text(meta)
    out["protocol"] = f"{chosen.protocol}, {used_text} weights"
    if req.estimator == "one-shot":
        out.pop("one_shot")

    base = baselines(data, req, estimator)
    columns = dict(chosen.columns)
    if "truth" in base:  # synthetic data: the model against the closed form, image by image
        truth_idx, truth_nll = base.pop("truth_per_image")
        truth_at = dict(zip(truth_idx.tolist(), truth_nll.tolist()))
        truth_nll = torch.tensor([truth_at[int(i)] for i in chosen.indices.tolist()], dtype=torch.float64)
        base["vs_truth"] = versus_truth(chosen.nll, truth_nll, data.d)
        columns["truth_energy"] = truth_nll.tolist()
    if req.per_image:
        write_per_image(req.per_image, chosen.indices, chosen.nll, data.d, data.quantization_bits if not req.t else None,
                        columns)
        out["per_image"] = str(req.per_image)
    if req.plots:
        out["plots"] = draw_plots(req.plots, data, chosen.indices, chosen.nll, req.estimator, ckpt)
    out.update(base)
    if req.consistency:
        out["consistency"] = run_consistency(model, data, meta["recipe"]["noise"]["t_min"], req.t_max, req.draws,
                                             req.batch_size, req.seed, device)
    if req.wants_denoising:
        out["denoising"] = run_denoising(model, ckpt, data, {"psnrs": req.psnrs, "denoiser": req.denoiser},
                                         req.batch_size, req.seed, device, req.plots,
                                         "denoiser" if is_denoiser else "energy")
    return out


def extrapolation_warning(meta, t):
    """The paper's embedding of raw t is flat for t << 1 (t = 0 reads like t_min); the logt one reads
    log(t + 1e-9) (nn/unet.py), so t = 0 is only safe when t_min is near 1e-9."""
    trained, model = meta["recipe"]["noise"], meta["recipe"]["model"]
    if (trained["t_min"] + 1e-9) > 2 * (t + 1e-9) and model["embedding"] == "logt" and model["kind"] != "radial":
        return (f"t={t:g} is below the trained noise range [{trained['t_min']:g}, {trained['t_max']:g}]: the "
                "network extrapolates there (log t embedding); compare --estimator pf-ode, which reports the energy at t_min")
    return None


def weights_text(meta):
    used = meta.get("weights", "raw")
    ema = meta.get("ema") or {}
    return used, (f"ema (decay {ema.get('decay')}, {ema.get('updates')} updates)" if used == "ema" else used)


def baselines(data, req, estimator):
    """{"truth": ...} for synthetic data with a closed form, else {"baseline": a Gaussian fitted to the training
    split} through the same estimator where it has a baseline() (else the one-shot's), or {}."""
    truth = data_mod.true_density(req.source, req.synthetic)
    if truth is not None:
        res, idx, nll = one_shot.baseline(truth, data, req, req.device, return_per_image=True)
        return {"truth": res.to_dict(), "truth_per_image": (idx, nll)}
    if not req.baseline or data.d > 4096:
        return {}
    train = data_mod.open_split(req.source, req.train_split, req.synthetic)
    gauss = fit_anchor(train)
    name = f"Gaussian fitted to {train.name} ({len(train)} examples)"
    b = getattr(estimator, "baseline", one_shot.baseline)(gauss, data, req)
    return {"baseline": {"name": name, **b.to_dict()}}


def versus_truth(model_nll, truth_nll, d):
    """Model − truth per image (both −log p of the same images, nats): the mean difference in nats/dim with its
    paired standard error, the RMS difference and the Pearson correlation over the images where both are finite."""
    m, g = model_nll.double(), truth_nll.double()
    ok = torch.isfinite(m) & torch.isfinite(g)
    m, g = m[ok], g[ok]
    diff = (m - g) / d
    n = int(ok.sum())
    corr = float(torch.corrcoef(torch.stack([m, g]))[0, 1]) if n > 2 and m.std() > 0 and g.std() > 0 else float("nan")
    return {"mean_nats_per_dim": float(diff.mean()), "stderr": float(diff.std() / math.sqrt(n)) if n > 1 else float("nan"),
            "rms_nats_per_dim": float(diff.pow(2).mean().sqrt()), "correlation": corr, "n_images": n,
            "protocol": "model − truth, −log p of the same (noisy) images in nats/dim, paired over images; Pearson "
                        "correlation of the per-image −log p"}


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


def check_denoiser(path, meta):
    """Refuse, before any work, a --denoiser trained on examples of another shape than the model's."""
    dshape = read_meta(path)["shape"]
    if tuple(dshape) != tuple(meta["shape"]):
        raise RequestError(f"--denoiser {path}: trained on examples of shape {tuple(dshape)}, the model on "
                           f"{tuple(meta['shape'])}; expected a denoiser of the same image shape")


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
