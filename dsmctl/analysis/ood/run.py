"""The `dsmctl score` protocol: features of the fit, reference and outlier sets, the detector, every score,
and per outlier set the AUROC / AUPR / FPR at 95 % TPR of each (outliers positive, higher score = outlier).

Scores (per image, higher = more outlying):
  multiscale, multiscale_nll, orientation, combined, max_z   the detector's (detector.py)
  nll          plug-in -log p(x) at t = 0, bits/dim: the plain likelihood
  bound        the valid dequantized bound, bits/dim (8-bit data)
  typicality   |nll - mean nll of the fit images|
  complexity   nll - zlib length, bits/dim (input complexity, Serra et al. 2020; 8-bit data)
  ratio_base   nll - (-log p of the model's own Gaussian base): a likelihood ratio (model.base gaussian only)
"""
import time

import numpy as np

from . import metrics
from .detector import Detector, typicality
from .features import features

MAIN_SCORES = ("combined", "multiscale", "orientation", "nll")  # drawn in the ROC figure (those present)


def headline(scores):
    """The score to read first: combined where the features have transforms, else multiscale."""
    return "combined" if "combined" in scores else "multiscale"


def set_features(model, data, opts, log=None):
    """features() of one set plus its cost: seconds per image and forward passes per image."""
    t0 = time.time()
    f = features(model, data, opts["t_grid"], opts["constant"], opts["draws"], opts["seed"], opts["batch_size"],
                 opts["device"], opts["bound_draws"], bound_t=opts.get("bound_t", 0.0),
                 transforms=opts.get("transforms", ()))
    f["seconds_per_image"] = (time.time() - t0) / max(1, len(data))
    if log:
        log(f"[score] {data.name}: {len(data)} images, {f['seconds_per_image'] * 1e3:.1f} ms and "
            f"{f['forward_passes']} forward passes per image")
    return f


def fit_detector(feat, opts, fit_name, model_info):
    return Detector.fit(feat["values"], feat["names"], t_grid=opts["t_grid"], draws=opts["draws"],
                        transforms=list(opts.get("transforms", ())),
                        bound_draws=opts["bound_draws"], seed=opts["seed"], nll_bits_mean=float(feat["nll_bits"].mean()),
                        fit_data=fit_name, model=model_info)


def scores(feat, det):
    """{score name: (N,) array} for one set."""
    s = det.score(feat["values"])
    s["nll"] = feat["nll_bits"]
    if feat["bound_bits"] is not None:
        s["bound"] = feat["bound_bits"]
    s["typicality"] = typicality(feat["nll_bits"], det.meta["nll_bits_mean"])
    if feat["zlib_bits"] is not None:
        s["complexity"] = feat["nll_bits"] - feat["zlib_bits"]
    if feat["base_bits"] is not None:
        s["ratio_base"] = feat["nll_bits"] - feat["base_bits"]
    return s


def table(ref_scores, out_scores):
    """{set: {score: {auroc, aupr, fpr95, ...}}} over the scores both sides have."""
    return {name: {k: metrics.summary(ref_scores[k], s[k]) for k in ref_scores if k in s}
            for name, s in out_scores.items()}


def per_image_rows(set_name, feat, sc):
    rows = []
    for i, idx in enumerate(feat["indices"]):
        r = {"set": set_name, "index": int(idx)}
        r.update({k: float(v[i]) for k, v in sc.items()})
        r.update({n: float(feat["values"][i, j]) for j, n in enumerate(feat["names"])})
        rows.append(r)
    return rows


def summary_text(res):
    tab = res["table"]
    if not tab:
        return "no outlier sets: nothing to compare (scores written per image)"
    names = list(next(iter(tab.values())))
    width = max(len(s) for s in tab) + 2
    lines = ["AUROC (1 = every outlier flagged, 0.5 = chance; reference " + res["reference"]["name"] + ")",
             "set".ljust(width) + "".join(n[:14].rjust(15) for n in names)]
    for s, row in tab.items():
        lines.append(s.ljust(width) + "".join((f"{row[n]['auroc']:.3f}" if n in row else "-").rjust(15)
                                              for n in names))
    lines.append(f"cost: {res['cost']['forward_passes_per_image']} forward passes per image "
                 f"({res['cost']['seconds_per_image'] * 1e3:.1f} ms per image on {res['cost']['device']})")
    return "\n".join(lines)


def plot(res, ref_scores, out_scores, out_dir):
    from .. import plots

    panels = {}
    for name, s in out_scores.items():
        panels[name] = {}
        for k in MAIN_SCORES + tuple(k for k in ("typicality", "complexity") if k in s):
            if k in s:
                fpr, tpr = metrics.roc_curve(ref_scores[k], s[k])
                panels[name][k] = (fpr, tpr, res["table"][name][k]["auroc"])
    paths = []
    if panels:
        paths.append(str(plots.roc_curves(panels, out_dir / "roc.png", f"reference {res['reference']['name']}")))
    h = headline(ref_scores)
    hist = {res["reference"]["name"]: ref_scores[h], **{n: s[h] for n, s in out_scores.items()}}
    paths.append(str(plots.score_histograms(hist, out_dir / "histograms.png", f"{h} score")))
    return paths


def run(model, fit, reference, outliers, opts, detector=None, model_info=None, log=None):
    """The whole protocol. opts: t_grid, constant, draws, bound_draws, seed, batch_size, device, transforms.
    Returns (result dict, per-image rows (reference, each outlier set, then the fit images when the detector was
    fitted here), detector, reference scores, {set: scores})."""
    fit_feat = None
    if detector is None:
        fit_feat = set_features(model, fit, opts, log)
        det = fit_detector(fit_feat, opts, fit.name, model_info or {})
    else:
        det = detector
    feats = {"reference": set_features(model, reference, opts, log)}
    ref_scores = scores(feats["reference"], det)
    out_scores = {}
    for name, data in outliers.items():
        feats[name] = set_features(model, data, opts, log)
        out_scores[name] = scores(feats[name], det)
    rows = per_image_rows("reference", feats["reference"], ref_scores)
    for name in outliers:
        rows += per_image_rows(name, feats[name], out_scores[name])
    if fit_feat is not None:  # last, so that other detectors can be fitted from the file alone
        rows += per_image_rows("fit", fit_feat, scores(fit_feat, det))
    secs = [f["seconds_per_image"] for f in feats.values()]
    res = {"reference": {"name": reference.name, "n": len(reference)},
           "outliers": {k: {"name": v.name, "n": len(v)} for k, v in outliers.items()},
           "detector": {k: v for k, v in det.meta.items() if k != "sha256"},
           "t_grid": list(det.meta["t_grid"]), "transforms": list(det.meta.get("transforms", [])),
           "scores": list(ref_scores), "headline": headline(ref_scores),
           "table": table(ref_scores, out_scores),
           "cost": {"forward_passes_per_image": feats["reference"]["forward_passes"],
                    "backward_passes_per_image": sum(1 if t == 0 else opts["draws"] for t in opts["t_grid"]),
                    "seconds_per_image": float(np.mean(secs)), "device": str(opts["device"] or "cpu")}}
    return res, rows, det, ref_scores, out_scores


def model_id(path):
    """sha256 of the model file (first 16 hex digits): a detector is valid for the model it was fitted with."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def check_detector(det, info, path):
    if det.meta.get("model", {}).get("sha256") != info["sha256"]:
        raise ValueError(f"--detector {path}: fitted on the features of model {det.meta.get('model', {}).get('path')} "
                         f"(sha256 {det.meta.get('model', {}).get('sha256')}); expected one fitted with "
                         f"{info['path']} (sha256 {info['sha256']}): refit without --detector")


def write_outputs(res, rows, det, ref_scores, out_scores, out=None, per_image=None, plots=True):
    """Files of one score run: OUT/{scores.json, per_image.csv, detector.safetensors, roc.png, histograms.png},
    and the per-image rows to PER_IMAGE (.csv or .jsonl). Returns the paths written."""
    from pathlib import Path

    from ...fileio import write_json, write_rows

    written = []
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        written.append(str(det.save(out / "detector.safetensors")))
        write_rows(out / "per_image.csv", rows)
        written.append(str(out / "per_image.csv"))
        if plots:
            written += plot(res, ref_scores, out_scores, out)
        res["files"] = written + [str(out / "scores.json")]
        write_json(out / "scores.json", _jsonable(res))
        written.append(str(out / "scores.json"))
    if per_image is not None:
        write_rows(per_image, rows)
        written.append(str(per_image))
    return written


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x
