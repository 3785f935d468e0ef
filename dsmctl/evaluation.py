"""eval-nll as the command runs it: the estimate (nll/evaluate.py), then the extras that are not estimates: the
figures (log p histogram, image strip) and the denoising curve (analysis/)."""
from pathlib import Path

import numpy as np
import torch

from . import units
from .nll.evaluate import evaluate_parts
from .nll.report import model_label


def evaluate(request, log=None):
    """nll.evaluate.evaluate's JSON-ready dict plus "plots" (figure paths, --plots DIR) and "denoising" (the curve)
    when the request asks for them."""
    from .engine.precision import exact_fp32

    out, ev = evaluate_parts(request, log)
    req, ckpt = ev.request, request.model
    with exact_fp32():
        if req.plots:
            out["plots"] = draw_plots(req.plots, ev.data, ev.indices, ev.nll, req.estimator, ckpt)
        if req.wants_denoising:
            out["denoising"] = run_denoising(ev.model, ckpt, ev.data, {"psnrs": req.psnrs, "denoiser": req.denoiser},
                                             req.batch_size, req.seed, ev.device, req.plots,
                                             "denoiser" if ev.is_denoiser else "energy")
    return out


def draw_plots(directory, data, idx, nll, estimator, ckpt):
    """The log p histogram and a strip of images from the most to the least likely; returns the two paths."""
    from .analysis import plots as P

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


def run_denoising(model, ckpt, data, opts, batch_size, seed, device, plots=None, kind="energy"):
    """Output PSNR against input PSNR of the model's denoiser (and of --denoiser's), with its figure under --plots."""
    from .analysis.denoising import DEFAULT_PSNRS, denoising_curve
    from .nn.model_file import load_model

    psnrs = opts.get("psnrs") or DEFAULT_PSNRS
    curves = {f"{model_label(ckpt)} ({kind})": denoising_curve(model, data, psnrs, batch_size, seed, device)}
    if opts.get("denoiser"):
        den, dmeta = load_model(opts["denoiser"], device, opts.get("weights", "auto"))
        name = f"{model_label(opts['denoiser'])} ({dmeta['recipe']['model']['kind']}, --denoiser)"
        curves[name] = denoising_curve(den, data, psnrs, batch_size, seed, device)
    res = {"curves": curves, "protocol": f"noise keyed by dataset index (seed {seed}), {len(data)} images of "
           f"{data.name}; output PSNR per image, no clipping, mean over images"}
    if plots:
        from .analysis import plots as P

        res["plot"] = str(P.denoising_curves(curves, Path(plots) / "denoising.png", f"denoising, {data.name}"))
    return res
