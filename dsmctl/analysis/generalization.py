"""Generalization test (paper Fig. 2): two models trained on disjoint subsets, compared image by image.

For each N: model A is trained on subset A (first N training images by default), model B on subset B
(last N), with the same recipe and number of steps. Both are evaluated (one-shot log p at t = noise.t_min by
default, each with its own stored normalization constant) on subset A, subset B and the test split. Per evaluation
set we report Δ = log p_A − log p_B per image (dB/dim): mean, mean |Δ|, RMS, and the correlation.
Memorization criterion (stated, and a flag): a model memorizes when the mean log p of its own training
images exceeds that of the test images by more than `threshold` dB/dim (default 1 dB/dim, about
0.33 bits/dim; the paper's generalizing ImageNet64 model has a train − test gap of 0.03 bits/dim).
Run directories are OUT/N<N>-a and OUT/N<N>-b; a finished one (model.safetensors present, same recipe)
is reused, an unfinished one resumes from its latest checkpoint.
"""
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np

from .. import data as data_mod
from .. import units
from ..nn.model_file import MODEL_FILE, load_model, read_meta
from ..fileio import write_text
from ..nll.likelihood import normalization_constant, one_shot_nll

DEFAULT_THRESHOLD_DB = 1.0


def subset_specs(n, split="first-last"):
    """('first:N', 'last:N') or, for split 'random:SEED', two seeded disjoint random subsets."""
    if split == "first-last":
        return f"first:{n}", f"last:{n}"
    seed = split.split(":", 1)[1] if split.startswith("random:") else ""
    if seed and all(c in "0123456789" for c in seed) and len(seed) <= 19:
        return f"random:{n}:{int(seed)}:a", f"random:{n}:{int(seed)}:b"
    raise ValueError(f"--split {split!r}: expected first-last or random:SEED (SEED an integer >= 0, e.g. random:0)")


def train_side(recipe, spec, run_dir, progress=True, log=print):
    """Train `recipe` restricted to subset `spec` into run_dir, or reuse a finished identical run."""
    from ..engine.trainer import train

    r = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, subset=spec))
    model_file = Path(run_dir) / MODEL_FILE
    if model_file.is_file():
        from ..recipe import RecipeError, recipe_from_dict

        try:  # read with today's defaults, so fields added since then do not count as differences
            stored = recipe_from_dict(read_meta(model_file)["recipe"]).to_dict()
        except RecipeError:
            stored = None
        if stored != r.to_dict():
            raise ValueError(f"{run_dir}: holds a model trained with a different recipe; choose another --out "
                             "or delete that run directory")
        log(f"[generalize] reusing {model_file}")
        return model_file
    log(f"[generalize] training {run_dir} on {spec} ({r.train.steps} steps)")
    summary = train(r, run_dir, resume="auto", command=f"dsmctl generalize (subset {spec})", progress=progress)
    if summary.get("stopped") or not model_file.is_file():
        raise KeyboardInterrupt  # stopped by a signal after a checkpoint: run generalize again to resume
    return model_file


def model_log_p(model_file, sets, batch_size=256, seed=0, device=None, t=0.0):
    """{set name: (indices, log p in dB/dim)} for one model, normalized with its stored constant."""
    model, meta = load_model(model_file, device)
    norm = meta.get("normalization")
    if norm:
        constant, t_max, anchor = (norm["constant"], norm["stderr"]), norm["t_max"], norm["anchor"]
    else:  # no stored constant: fix it on the test set, the recipe's way
        t_max, anchor = meta["recipe"]["eval"]["t_max"], meta["recipe"]["eval"]["anchor"]
        constant = normalization_constant(model, sets["test"], t_max, anchor, batch_size, seed, device)
    out = {}
    for name, data in sets.items():
        _, idx, nll = one_shot_nll(model, data, t, t_max, anchor, batch_size, seed, device, constant=constant,
                                   return_per_image=True)
        out[name] = (idx.numpy(), units.log_p_db_per_dim(nll.numpy(), data.d))
    return out


def compare(a, b):
    """Δ statistics (dB/dim) between two arrays of per-image log p."""
    delta = a - b
    corr = float(np.corrcoef(a, b)[0, 1]) if len(a) > 1 and a.std() > 0 and b.std() > 0 else math.nan
    return {"n_images": int(len(a)), "log_p_a": float(a.mean()), "log_p_b": float(b.mean()),
            "delta_mean": float(delta.mean()), "delta_abs_mean": float(np.abs(delta).mean()),
            "delta_rms": float(np.sqrt((delta ** 2).mean())), "correlation": corr}


def evaluate_pair(model_a, model_b, sets, n, threshold=DEFAULT_THRESHOLD_DB, batch_size=256, seed=0, device=None,
                  t=0.0):
    """One N: statistics per evaluation set, train − test gaps, memorization verdicts, per-image arrays."""
    la = model_log_p(model_a, sets, batch_size, seed, device, t)
    lb = model_log_p(model_b, sets, batch_size, seed, device, t)
    row = {"n": int(n), "model_a": str(model_a), "model_b": str(model_b), "memorization_threshold": threshold, "t": t}
    for name in sets:
        row[name.replace(" ", "_")] = compare(la[name][1], lb[name][1])
    row["gap_a"] = float(la["subset A"][1].mean() - la["test"][1].mean())
    row["gap_b"] = float(lb["subset B"][1].mean() - lb["test"][1].mean())
    row["memorizes_a"], row["memorizes_b"] = row["gap_a"] > threshold, row["gap_b"] > threshold
    per_image = [{"n": int(n), "set": name, "index": int(i), "log_p_a": float(pa), "log_p_b": float(pb)}
                 for name in sets for i, pa, pb in zip(la[name][0], la[name][1], lb[name][1])]
    return row, per_image


def eval_sets(source, train_split, test_split, specs, synthetic=None, n_eval=500):
    """Subset A, subset B (each capped at n_eval images) and the test split (first n_eval)."""
    train = data_mod.open_split(source, train_split, synthetic)
    test = data_mod.open_split(source, test_split, synthetic)
    sets = {}
    for name, spec in zip(("subset A", "subset B"), specs):
        s = data_mod.subset(train, spec)
        sets[name] = s.subset(np.arange(min(n_eval, len(s))), name=s.name) if n_eval else s
    sets["test"] = test.subset(np.arange(min(n_eval, len(test)))) if n_eval else test
    return sets


def run(recipe, ns, out, split="first-last", n_eval=500, threshold=DEFAULT_THRESHOLD_DB, batch_size=None,
        device=None, progress=True, log=print, plot=True, t=None):
    """The whole protocol over a list of N; writes OUT/generalization.{json,txt}, per_image.csv, PNGs."""
    out = Path(out)
    d = recipe.data
    n_train = len(data_mod.open_split(d.source, d.train_split, d.synthetic))
    bad = [n for n in ns if n < 1 or 2 * n > n_train]
    if bad:  # checked before OUT is created: a refused request leaves nothing behind
        raise ValueError(f"--n {bad[0]}: two disjoint subsets of N images need 1 <= N <= {n_train // 2} "
                         f"({n_train} training images in {d.source}:{d.train_split})")
    out.mkdir(parents=True, exist_ok=True)
    rows, per_image = [], []
    batch_size = batch_size or recipe.eval.batch_size
    # Default: the lowest trained noise level. Below it the network extrapolates (with the logt embedding, t = 0
    # is read as t = 1e-9, three decades below a t_min of 1e-6), which blurs memorization; see docs/analyses.md.
    t = recipe.noise.t_min if t is None else t
    pending = sum(not (out / f"N{n}-{side}" / MODEL_FILE).is_file() for n in ns for side in "ab")
    trained, spent = 0, 0.0

    def train_one(spec, run_dir):  # train_side, plus the whole protocol's ETA from the models trained so far
        nonlocal trained, spent
        fresh = not (run_dir / MODEL_FILE).is_file()
        t0 = time.time()
        file = train_side(recipe, spec, run_dir, progress, log)
        if fresh:
            trained, spent = trained + 1, spent + time.time() - t0
            left = pending - trained
            log(f"[generalize] {trained}/{pending} models trained ({spent / trained / 60:.1f} min each)"
                + (f"; about {left * spent / trained / 60:.0f} min left" if left else ""))
        return file

    for n in sorted(ns):
        specs = subset_specs(n, split)
        files = [train_one(spec, out / f"N{n}-{side}") for spec, side in zip(specs, "ab")]
        sets = eval_sets(d.source, d.train_split, d.eval_split, specs, d.synthetic, n_eval)
        row, pi = evaluate_pair(*files, sets, n, threshold, batch_size, recipe.eval.seed, device, t)
        row["subsets"] = list(specs)
        row["steps"] = recipe.train.steps
        rows.append(row)
        per_image += pi
        write_outputs(out, rows, per_image, plot)  # after every N: a partial report survives an interruption
        log(f"[generalize] N={n}: test RMS Δ {row['test']['delta_rms']:.3f} dB/dim, corr "
            f"{row['test']['correlation']:.4f}; gaps {row['gap_a']:+.2f} / {row['gap_b']:+.2f} dB/dim")
    return {"rows": rows, "out": str(out), "protocol": protocol_text(recipe, split, n_eval, threshold, t)}


def protocol_text(recipe, split, n_eval, threshold, t=0.0):
    return (f"subsets {split} of {recipe.data.source}:{recipe.data.train_split}, {recipe.train.steps} steps each "
            f"(recipe hash without subset {dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, subset=None)).hash()}); "
            f"one-shot log p at t={t:g} (noise keyed by index, same for both models) with each model's stored constant ({recipe.eval.anchor} anchor, t_max "
            f"{recipe.eval.t_max:g}); evaluated on up to {n_eval} images of each subset and of "
            f"{recipe.data.eval_split}; memorizes = own-train − test log p > {threshold:g} dB/dim")


def summary_text(rows):
    head = (f"{'N':>7} {'set':>9} {'logp A':>8} {'logp B':>8} {'mean Δ':>8} {'mean|Δ|':>8} {'RMS Δ':>8} "
            f"{'corr':>7}   (log p in dB/dim)")
    lines = [head]
    for r in rows:
        for name in ("subset_A", "subset_B", "test"):
            s = r[name]
            lines.append(f"{r['n']:>7} {name.replace('_', ' '):>9} {s['log_p_a']:8.3f} {s['log_p_b']:8.3f} "
                         f"{s['delta_mean']:+8.3f} {s['delta_abs_mean']:8.3f} {s['delta_rms']:8.3f} {s['correlation']:7.4f}")
        verdict = lambda m: "memorizes" if m else "generalizes"  # noqa: E731
        lines.append(f"{'':>7} train − test gap: A {r['gap_a']:+.3f} ({verdict(r['memorizes_a'])}), "
                     f"B {r['gap_b']:+.3f} ({verdict(r['memorizes_b'])}) dB/dim")
    return "\n".join(lines)


def write_outputs(out, rows, per_image, plot=True):
    write_text(out / "generalization.json", json.dumps({"rows": rows}, indent=2))
    write_text(out / "generalization.txt", summary_text(rows) + "\n")
    lines = ["n,set,index,log_p_a,log_p_b"] + [f"{r['n']},{r['set']},{r['index']},{r['log_p_a']:.6f},{r['log_p_b']:.6f}"
                                              for r in per_image]
    write_text(out / "per_image.csv", "\n".join(lines) + "\n")
    if plot:
        from . import plots

        panels = []
        for r in rows:
            sel = [p for p in per_image if p["n"] == r["n"]]
            note = f"test RMS Δ {r['test']['delta_rms']:.2f}, ρ {r['test']['correlation']:.3f}"
            panels.append({"n": r["n"], "a": [p["log_p_a"] for p in sel], "b": [p["log_p_b"] for p in sel],
                           "kind": [p["set"] for p in sel], "note": note})
        plots.generalization_scatter(panels, out / "scatter.png")
        plots.generalization_summary(rows, out / "summary.png")


def run_pair(model_a, model_b, n_eval=500, threshold=DEFAULT_THRESHOLD_DB, batch_size=256, device=None, out=None,
             plot=True, t=0.0):
    """Compare two existing checkpoints; their subsets and N come from their metadata."""
    ma, mb = read_meta(model_a), read_meta(model_b)
    specs = [m["data"].get("subset") for m in (ma, mb)]
    if not all(specs):
        raise ValueError("both models must have been trained on a data.subset (first:N, last:N, random:...)")
    rec = ma["recipe"]["data"]
    n_train = len(data_mod.open_split(rec["source"], rec["train_split"], rec.get("synthetic")))
    pa, pb = (set(data_mod.subset_positions(n_train, spec).tolist()) for spec in specs)
    if pa & pb:
        raise ValueError(f"{model_a} ({specs[0]}) and {model_b} ({specs[1]}) share {len(pa & pb)} training images; "
                         "the test needs disjoint subsets")
    n = min(m["data"]["n"] for m in (ma, mb))
    sets = eval_sets(rec["source"], rec["train_split"], rec["eval_split"], specs, rec.get("synthetic"), n_eval)
    row, pi = evaluate_pair(model_a, model_b, sets, n, threshold, batch_size, ma["recipe"]["eval"]["seed"], device, t)
    row["subsets"] = specs
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        write_outputs(Path(out), [row], pi, plot)
    return {"rows": [row], "out": str(out) if out else None}
