"""eval-nll's estimate: check the request, load the model, pick the evaluation data, run an estimator, add baselines.

Estimators (ESTIMATORS below): "one-shot" (the paper's protocol; on 8-bit data a plug-in, not a bound),
"dequantized" (8-bit data: importance-weighted upper bounds on the discrete NLL), "pf-ode" (probability-flow ODE
from the same network's grad_y U). The default, "auto", is the bound on 8-bit images at t = 0 and the one-shot
otherwise; the one-shot (plug-in) number always stands beside it, with their paired difference and flags
(nll/flags.py) for results no normalized model can give.
A new estimator is one module with `estimate(model, data, request) -> Estimate` (nll/request.py) and one line here.
The extras that are not estimates (figures, denoising curve) are added by eval-nll's orchestration, dsmctl/evaluation.py.
"""
import math
import time
from dataclasses import replace
from typing import NamedTuple

import numpy as np
import torch

from .. import data as data_mod
from .. import units
from ..device import resolve_device
from ..nn.model_file import load_model, read_meta
from . import dequantize, flags, one_shot, pfode
from .likelihood import fit_anchor, normalization_constant
from .report import model_label, summary_lines, write_per_image  # noqa: F401  (eval-nll's report)
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


class Evaluated(NamedTuple):
    """What eval-nll's extras (dsmctl/evaluation.py) need beside the result: the request resolved against the model
    file, the loaded model, the evaluated images, the chosen estimator's per-image -log p (nats) by dataset index,
    the device."""
    request: object
    model: object
    data: object
    indices: object
    nll: object
    device: object
    is_denoiser: bool


def evaluate(request, log=None):
    """Returns a JSON-ready dict: the model's NLL with its protocol, baselines where available, the per-image file
    and consistency prediction asked for. log: a callable for progress lines. The figures and the denoising curve
    are not estimates: dsmctl.evaluation.evaluate adds them (this refuses a request that asks for them)."""
    if request.plots is not None or request.wants_denoising:
        raise ValueError("--plots and the denoising curve are eval-nll's extras: use dsmctl.evaluation.evaluate")
    return evaluate_parts(request, log)[0]


def evaluate_parts(request, log=None):
    """(evaluate's dict, Evaluated) for the extras; the request's plots and denoising options are left to the caller."""
    from ..engine.precision import exact_fp32

    request.check(ESTIMATORS)
    with exact_fp32():  # no TF32 in evaluation, whatever the process-wide setting
        return _evaluate(request, log or (lambda *_: None))


def _evaluate(request, log):
    ckpt = request.model
    device = resolve_device(request.device)
    model, meta = load_model(ckpt, device, request.weights)
    is_denoiser = meta["recipe"]["model"]["kind"] == "denoiser"
    if is_denoiser and request.estimator not in ("auto", "pf-ode"):
        raise RequestError(f"{ckpt}: a denoiser (score-network) model has no energy, hence no {request.estimator} NLL; "
                           "use --estimator pf-ode (it needs only grad_y)")
    if is_denoiser and request.consistency:
        raise RequestError(f"{ckpt}: a denoiser model has no dU/dt; --consistency needs an energy model")
    req = replace(request.resolved(meta), device=device, log=log)
    data, _, _ = open_eval_data(meta, req.source, req.split, req.n_images, req.start)
    req = req.for_denoiser(data.quantization_bits) if is_denoiser else req.for_data(data.quantization_bits)
    estimator = ESTIMATORS[req.estimator]
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
    reference = None
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
    read_at = getattr(chosen.result, "bound_t", req.t)  # the bound reads p_t at its own bound_t, on clean images
    warning = extrapolation_warning(meta, read_at) if getattr(estimator, "EVALUATES_AT_T", True) else None
    if warning:
        out["warning"] = warning
    out["nll"] = chosen.result.to_dict()
    out["weights"], used_text = weights_text(meta)
    out["protocol"] = f"{chosen.protocol}, {used_text} weights"
    if "one_shot" in out:  # the result asked for leads the document; the one-shot reference comes after it
        out["one_shot"] = out.pop("one_shot")
    if req.estimator == "one-shot":
        out.pop("one_shot")
        out["nll"]["label"] = one_shot.label(reference.result)
    elif reference is not None:
        out["one_shot"]["label"] = one_shot.label(reference.result)
        against, what = reference, "one-shot"
        if req.estimator == "pf-ode" and req.dequantize:  # like with like: the one-shot at the ODE's start point
            against = one_shot_at_ode_start(model, data, req)
            out["one_shot_dequantized"] = against.result.to_dict()
            what = f"one-shot bound at the ODE's start (same x + u, t = {req.t_min:g})"
        out["difference"] = flags.paired(against.indices, against.nll, chosen.indices, chosen.nll, data.d)
        if out["difference"]:
            out["difference"]["protocol"] = f"{what} − {req.estimator}, paired over the same images, bits/dim"
    out["flags"] = check_flags(out, req, reference, data.d)

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
    out.update(base)
    if req.consistency:
        out["consistency"] = run_consistency(model, data, meta["recipe"]["noise"]["t_min"], req.t_max, req.draws,
                                             req.batch_size, req.seed, device)
    return out, Evaluated(req, model, data, chosen.indices, chosen.nll, device, is_denoiser)


def check_flags(out, req, reference, d):
    """nll/flags.py's checks on this result: impossible values, a plug-in far below the bound, a one-shot that
    claims more probability than the PF-ODE."""
    found = []
    if reference is not None:
        per_image = units.bits_per_dim(reference.nll, d, reference.result.quantization_bits)
        found += flags.below_zero("the one-shot (plug-in) NLL" if req.estimator != "one-shot" else "the NLL",
                                  reference.result.to_dict(), per_image)
    if req.estimator == "dequantized":
        found += flags.below_zero("the bound", out["nll"])
        found += flags.plug_in_vs_bound(out.get("difference"))
    if req.estimator == "pf-ode" and reference is not None and not req.t:
        found += flags.one_shot_vs_pf_ode(out.get("difference"))
    return found


def one_shot_at_ode_start(model, data, req):
    """The one-shot counterpart of `pf-ode --dequantize`: U(x + u, t_min) + c with the ODE's own u (draw 0, uniform),
    a K = 1 dequantized bound of p_t_min; paired with the PF-ODE it checks the one-shot constant."""
    t0 = time.time()
    res, idx, nll = dequantize.dequantized_nll(model, data, 1, req.t_max, req.anchor, req.batch_size, req.seed,
                                               req.device, constant=req.constant, return_per_image=True, t=req.t_min)
    return dequantize.Estimate(res, idx, nll, time.time() - t0, dequantize.protocol(res))


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
