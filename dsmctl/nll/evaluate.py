"""eval-nll's estimate: check the request, load the model, pick the evaluation data, run an estimator, add baselines.

Estimators (ESTIMATORS below): "one-shot" (the paper's protocol, default), "dequantized" (8-bit data: a bound
comparable with dequantized baselines), "pf-ode" (probability-flow ODE from the same network's grad_y U).
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
from ..device import resolve_device
from ..nn.model_file import load_model
from . import dequantize, one_shot, pfode
from .likelihood import fit_anchor, normalization_constant
from .report import model_label, summary_lines, write_per_image  # noqa: F401  (eval-nll's report)
from .request import EvalRequest, RequestError

ESTIMATORS = {"one-shot": one_shot, "dequantized": dequantize, "pf-ode": pfode}


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
        out["seconds"]["one-shot"] = reference.seconds
        out["one_shot"] = reference.result.to_dict()
    if req.estimator == "one-shot":
        chosen = reference
    else:
        chosen = estimator.estimate(model, data, req)
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
    out.update(base)
    if req.consistency:
        out["consistency"] = run_consistency(model, data, meta["recipe"]["noise"]["t_min"], req.t_max, req.draws,
                                             req.batch_size, req.seed, device)
    return out, Evaluated(req, model, data, chosen.indices, chosen.nll, device, is_denoiser)


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

