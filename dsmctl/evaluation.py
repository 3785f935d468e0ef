"""eval-nll: load a model, pick the evaluation data, run the one-shot protocol, add baselines."""
import csv
import json
from pathlib import Path

import numpy as np
import torch

from . import data as data_mod
from . import units
from .checkpoint import load_model
from .likelihood import fit_anchor, one_shot_nll


def pick_device(device=None):
    if device and device != "auto":
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def open_eval_data(meta, source=None, split=None, n_images=None):
    recipe = meta["recipe"]
    source = source or recipe["data"]["source"]
    synthetic = recipe["data"].get("synthetic") if source == recipe["data"]["source"] else None
    data = data_mod.open_split(source, split or recipe["data"]["eval_split"], synthetic)
    if n_images:
        data = data.subset(np.arange(min(n_images, len(data))))
    return data, source, synthetic


def eval_nll(ckpt, source=None, split=None, t=None, t_max=None, anchor=None, n_images=None, batch_size=None,
             seed=None, device=None, baseline=True, per_image=None, stored_constant=False, weights="auto"):
    """Returns a JSON-ready dict: the model's NLL with its protocol, and baselines where available."""
    from .engine.precision import exact_fp32

    with exact_fp32():  # no TF32 in evaluation, whatever the process-wide setting
        return _eval_nll(ckpt, source, split, t, t_max, anchor, n_images, batch_size, seed, device, baseline,
                         per_image, stored_constant, weights)


def _eval_nll(ckpt, source, split, t, t_max, anchor, n_images, batch_size, seed, device, baseline, per_image,
              stored_constant, weights):
    device = pick_device(device)
    model, meta = load_model(ckpt, device, weights)
    if meta["recipe"]["model"]["kind"] == "denoiser":
        raise ValueError(f"{ckpt}: a denoiser (score-network) model has no energy, hence no NLL")
    ev = meta["recipe"]["eval"]
    t = ev["t"] if t is None else t
    t_max, anchor = t_max or ev["t_max"], anchor or ev["anchor"]
    n_images = n_images or ev["n_images"]
    batch_size, seed = batch_size or ev["batch_size"], ev["seed"] if seed is None else seed
    data, source, synthetic = open_eval_data(meta, source, split, n_images)
    if tuple(data.shape) != tuple(meta["shape"]):
        raise ValueError(f"{source}: examples of shape {tuple(data.shape)}, but the model was trained on {tuple(meta['shape'])}")

    constant = None
    norm = meta.get("normalization")
    if stored_constant:
        if not norm:
            raise ValueError(f"{ckpt}: no stored normalization constant; drop --stored-constant")
        constant, t_max, anchor = (norm["constant"], norm["stderr"]), norm["t_max"], norm["anchor"]
    kw = dict(t=t, t_max=t_max, batch_size=batch_size, seed=seed, device=device)
    result, idx, nll = one_shot_nll(model, data, anchor=anchor, constant=constant, return_per_image=True, **kw)
    used = meta.get("weights", "raw")
    ema = meta.get("ema") or {}
    used_text = f"ema (decay {ema.get('decay')}, {ema.get('updates')} updates)" if used == "ema" else used
    out = {"model": str(ckpt), "step": meta.get("step"), "weights": used, "nll": result.to_dict(),
           "protocol": f"{protocol_text(result)}, {used_text} weights"}
    if per_image:
        write_per_image(per_image, idx, nll, data.d, result.quantization_bits)
        out["per_image"] = str(per_image)

    truth = data_mod.true_density(source, synthetic)
    if truth is not None:
        out["truth"] = one_shot_nll(truth, data, constant=(0.0, 0.0), anchor="exact", **kw).to_dict()
    elif baseline and data.d <= 4096:
        train = data_mod.open_split(source, meta["recipe"]["data"]["train_split"], synthetic)
        gauss = fit_anchor(train)
        out["baseline"] = {"name": f"Gaussian fitted to {train.name} ({len(train)} examples)",
                           **one_shot_nll(gauss, data, constant=(0.0, 0.0), anchor="exact", **kw).to_dict()}
    return out


def protocol_text(r):
    quant = f"+{r.quantization_bits} bits/dim for {r.quantization_bits}-bit data" if r.quantization_bits else "continuous (no +8)"
    return (f"one-shot NLL at t={r.t:g} (PSNR {units.t_to_psnr(r.t):.1f} dB), constant c={r.constant:.6g}"
            f"±{r.constant_stderr:.2g} nats at t_max={r.t_max:g} ({r.anchor} anchor), {r.n_images} images of "
            f"{r.data} (fingerprint {r.data_fingerprint}), noise seed {r.seed}, {quant}")


def write_per_image(path, idx, nll, d, qbits):
    """CSV or JSONL (by suffix) keyed by dataset index: energy (nats), log p (dB/dim), bits/dim."""
    path = Path(path)
    rows = [{"index": int(i), "energy": float(u), "log_p_db_per_dim": units.log_p_db_per_dim(float(u), d),
             "bits_per_dim": units.bits_per_dim(float(u), d, qbits)} for i, u in zip(idx.tolist(), nll.tolist())]
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        if path.suffix == ".jsonl":
            for r in rows:
                f.write(json.dumps(r) + "\n")
        else:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    tmp.replace(path)
