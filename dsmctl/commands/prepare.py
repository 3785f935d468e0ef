"""`dsmctl prepare`: turn a data source into a prepared directory (or verify one)."""
from pathlib import Path
from typing import List, Optional

import typer

from .common import UsageError, emit_json, err


def prepare(
    source: str = typer.Argument(..., help="demo | synthetic[:gsm1000|:gaussian64] | owner/name (Hugging Face) | "
                                 "hf:DIR | imagenet-org:DIR | mnist:ROOT | fashion-mnist:ROOT | cifar10:ROOT | "
                                 "FILE.npy/.npz | image folder (see docs/data.md)"),
    out: Path = typer.Option(None, "--out", "-o", help="Prepared directory to write."),
    split: Optional[str] = typer.Option(None, help="Only these splits, comma-separated (e.g. train,validation)."),
    limit: Optional[int] = typer.Option(None, help="Keep the first N items of each split (quick subsets)."),
    grayscale: bool = typer.Option(False, help="Convert colour images to grey (ITU-R 601-2 luma, as PIL's 'L')."),
    size: Optional[int] = typer.Option(None, help="Make images SIZE x SIZE (how: --fit)."),
    fit: str = typer.Option("resize", help="With --size: resize (box-filter the short side, centre-crop) | "
                            "crop (centre crop) | pad (zero padding)."),
    holdout: float = typer.Option(0, help="Move the last N (or a fraction < 1) of a single-split source to 'test'."),
    layout: str = typer.Option("auto", help="Array layout of .npy/.npz images: auto | nchw | nhwc."),
    config: Optional[str] = typer.Option(None, help="Hugging Face dataset configuration name."),
    revision: Optional[str] = typer.Option(None, help="Hugging Face dataset revision (branch, tag or commit)."),
    image_column: Optional[str] = typer.Option(None, help="Hugging Face image column (default: detected)."),
    label_column: Optional[str] = typer.Option(None, help="Hugging Face label column (default: detected)."),
    variant: Optional[str] = typer.Option(None, help="Name the data set in the manifest, e.g. the Hub id a local "
                                          "copy came from (sradc/imagenet_resized_64x64: its sizes are then checked)."),
    param: List[str] = typer.Option([], "--param", help="Synthetic density parameter, e.g. --param d=64 "
                                    "--param variances=[1,4] --param n_train=5000 (repeatable)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing prepared directory made from another request."),
    verify: bool = typer.Option(False, "--verify", help="Recompute the fingerprint of an existing prepared SOURCE."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON on stdout."),
):
    """Turn a data source into a prepared directory (one uint8/float array per split + manifest.json).

    Writing is resumable (re-run the same command after an interruption) and atomic (the directory
    appears complete or not at all); the same command twice does nothing the second time.

    Examples:
      dsmctl prepare demo --out data/demo
      dsmctl prepare synthetic:gsm1000 --out data/gsm1000
      dsmctl prepare synthetic:gsm1000 --param d=100 --param variances=[1,4] --out data/gsm100
      dsmctl prepare imagenet-org:~/Imagenet64 --out data/imagenet64
      dsmctl prepare benjamin-paine/imagenet-1k-64x64 --split train,validation --out data/imagenet64-hf
      dsmctl prepare fashion-mnist:/usr/share/datasets/fashion-mnist --out data/fashion-mnist
      dsmctl prepare images/ --size 64 --holdout 0.1 --out data/mine
      dsmctl prepare --verify data/imagenet64
    """
    from .. import data
    from ..progress import PrepareProgress

    progress = PrepareProgress(enabled=not quiet)
    try:
        target = Path(source) if verify else out
        note = data.recover(target) if target is not None else None  # a `prepare --force` killed mid-install
        if note:
            err.print(note, markup=False)
        if verify:
            ok, report = data.verify(source, progress=progress)
            progress.close()
            for item, (want, got) in report.items():
                err.print(f"{source}:{item}: {'ok' if want == got else 'MISMATCH'} sha256 {got[:16]}"
                          + ("" if want == got else f" (manifest says {str(want)[:16]})"))
            if as_json:
                emit_json({"ok": ok, "splits": {k: {"expected": a, "actual": b} for k, (a, b) in report.items()}})
            raise typer.Exit(0 if ok else 1)
        if out is None:
            raise UsageError("prepare: --out DIR is required")
        if layout not in ("auto", "nchw", "nhwc"):
            raise UsageError(f"--layout {layout!r}: expected auto, nchw or nhwc")
        if fit not in ("resize", "crop", "pad"):
            raise UsageError(f"--fit {fit!r}: expected resize, crop or pad")
        holdout = int(holdout) if holdout >= 1 else holdout
        splits = [s.strip() for s in split.split(",") if s.strip()] if split else None
        synthetic_spec = None
        if param:
            if not source.startswith("synthetic"):
                raise UsageError(f"--param applies to synthetic sources, not {source!r}")
            from ..data.sources import synthetic_spec_of
            from ..recipe import parse_override

            synthetic_spec = {**synthetic_spec_of(source), **dict(parse_override(p) for p in param)}
        manifest = data.prepare(source, out, force=force, progress=progress, synthetic_spec=synthetic_spec,
                                grayscale=grayscale, size=size, fit=fit,
                                holdout=holdout, layout=layout, splits=splits, limit=limit, config=config,
                                revision=revision, image_column=image_column, label_column=label_column,
                                variant=variant)
    finally:
        progress.close()
    if manifest.get("reused"):
        err.print(f"{out}: already prepared from the same source and options; nothing to do (--force to redo)")
    err.print(f"{out}: {manifest.get('variant')}; {manifest.get('transform', '')}")
    for name, s in manifest["splits"].items():
        err.print(f"{out}:{name}: {s['n']:,} x {tuple(s['shape'])} {s['dtype']}"
                  f"{' + labels' if s.get('labels') else ''}  sha256 {s['sha256'][:16]}")
    for w in manifest.get("warnings", []):
        err.print(f"warning: {w}", style="yellow")
    err.print(f"fingerprint {manifest['fingerprint']}")
    if as_json:
        emit_json(manifest)
