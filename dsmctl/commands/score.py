"""`dsmctl score`: out-of-distribution scores from the energy at every noise level, with AUROC / AUPR / FPR95."""
from pathlib import Path
from typing import Optional

import typer

from .common import UsageError, check_writable, emit_json, err, need_int


def score(
    ckpt: Path = typer.Argument(..., help="Model file, checkpoint dir or run dir."),
    outliers: str = typer.Option("", help="Comma list of outlier sets: inverted, upside-down, noise, constant, "
                                 "patches, digits[:FILE], class:K, or a data source SRC[:SPLIT]."),
    reference: Optional[str] = typer.Option(None, help="In-distribution split scored against the outliers "
                                            "(default: the recipe's eval split)."),
    n: int = typer.Option(1000, "--n", help="Images per reference and outlier set (the first N)."),
    fit_on: Optional[str] = typer.Option(None, help="Split the detector is fitted on (default: the recipe's train "
                                         "split)."),
    fit_images: str = typer.Option("last:1000", help="Which images of --fit-on: first:N, last:N or random:N:SEED:a."),
    data: Optional[str] = typer.Option(None, help="Data source of the reference and fit images (default: the "
                                       "model's own)."),
    detector: Optional[Path] = typer.Option(None, help="Reuse a fitted detector (OUT/detector.safetensors) instead "
                                            "of fitting one; its noise levels, draws and transforms are used."),
    t_grid: str = typer.Option("0,1e-4,1e-3,1e-2,0.1,1", help="Noise variances of the features (0 = clean)."),
    transforms: str = typer.Option("auto", help="Orientation features: U of the copy turned by each of these minus U "
                                   "of the copy, per level: a comma list of vflip, hflip, rot90, rot180, rot270 "
                                   "(quarter turns need square images), auto (= vflip) or none."),
    draws: int = typer.Option(1, help="Noise draws per image and level t > 0."),
    bound_draws: int = typer.Option(2, help="Uniform draws of the dequantized bound per image (0: no bound)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Directory: scores.json, per_image.csv, "
                                       "detector.safetensors, roc.png, histograms.png."),
    per_image: Optional[Path] = typer.Option(None, help="Per-image scores and features to FILE (.csv or .jsonl)."),
    plot: bool = typer.Option(True, help="Write roc.png and histograms.png into --out."),
    batch_size: int = typer.Option(128),
    seed: int = typer.Option(0, help="Noise seed (noise is keyed by dataset index) and seed of the random shifts."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    weights: str = typer.Option("auto", help="auto (EMA weights when the run has them) | ema | raw."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
):
    """Flag images the model should not trust: per-image scores from -log p_t, |grad U|, t dU/dt and the energy of
    turned copies at several noise levels, a Gaussian detector fitted on held-out training images, and AUROC /
    AUPR / FPR at 95 % TPR per outlier set beside the plain likelihood and other baselines (docs/ood.md).

    Examples:
      dsmctl score runs/fm --outliers inverted,upside-down,noise,constant,patches --out runs/fm-ood
      dsmctl score runs/fm --detector runs/fm-ood/detector.safetensors --reference test --per-image s.csv
      dsmctl score runs/loco8 --outliers class:8 --json
    """
    from ..analysis.ood import features as F
    from ..analysis.ood.detector import Detector
    from ..analysis.ood.run import check_detector, model_id, run, summary_text, write_outputs
    from ..analysis.ood.sets import open_sets
    from ..device import resolve_device
    from ..nn.model_file import WEIGHTS, load_model, resolve_model_path

    need_int(n, "--n", 1)
    need_int(draws, "--draws", 1, 10 ** 4)
    need_int(bound_draws, "--bound-draws", 0, 10 ** 4)
    need_int(batch_size, "--batch-size", 1, 10 ** 7)
    need_int(seed, "--seed", 0, 2 ** 63 - 1)
    if weights not in WEIGHTS:
        raise UsageError(f"--weights {weights!r}: expected one of {', '.join(WEIGHTS)}")
    grid = F.parse_t_grid(t_grid)
    specs = [s.strip() for s in outliers.split(",") if s.strip()]
    if len(set(specs)) != len(specs):
        raise UsageError(f"--outliers {outliers!r}: a set named twice")
    det = Detector.load(detector) if detector is not None else None
    if out is not None:
        check_writable(out, "--out")
    if per_image is not None:
        if per_image.suffix not in (".csv", ".jsonl"):
            raise UsageError(f"--per-image {per_image}: expected a .csv or .jsonl file name")
        check_writable(per_image, "--per-image", kind="file")
    dev = resolve_device(device)
    file = resolve_model_path(ckpt, weights)
    net, meta = load_model(file, dev, weights)
    if meta["recipe"]["model"]["kind"] == "denoiser":
        raise UsageError(f"{file}: a denoiser (score-network) model has no energy; expected an energy model")
    info = {"path": str(file), "sha256": model_id(file), "step": meta.get("step")}
    shape = tuple(meta["shape"])
    turns = F.parse_transforms(transforms, shape)
    if det is not None:
        check_detector(det, info, detector)
        grid, draws, bound_draws, seed = det.meta["t_grid"], det.meta["draws"], det.meta["bound_draws"], det.meta["seed"]
        turns = list(det.meta.get("transforms", []))
    fit, ref, sets, notes = open_sets(meta, data, fit_on, fit_images, reference, specs, n, seed, need_fit=det is None)
    norm = meta.get("normalization") or {}
    opts = {"t_grid": grid, "constant": float(norm.get("constant", 0.0)), "draws": draws, "bound_draws": bound_draws,
            "seed": seed, "batch_size": batch_size, "device": dev, "transforms": turns,
            "bound_t": meta["recipe"]["eval"].get("bound_t", 0.0)}  # the bound baseline reads p_t where eval-nll does
    if not norm:
        err.print(f"note: {file} has no stored normalization constant; nll values are unnormalized (c = 0), which "
                  "changes no score's ranking")
    res, rows, det, ref_scores, out_scores = run(net, fit, ref, sets, opts, det, info, log=lambda t: err.print(t))
    res.update(model=info, data=notes, constant_stored=bool(norm))
    if detector is not None:
        res["detector"]["file"] = str(detector)
    written = write_outputs(res, rows, det, ref_scores, out_scores, out, per_image, plot)
    err.print(summary_text(res))
    for path in written:
        err.print(f"wrote {path}")
    if as_json:
        emit_json(res)
