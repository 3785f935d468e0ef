"""`dsmctl dimension`: local effective dimensionality against noise level (paper Fig. 5)."""
from pathlib import Path
from typing import Optional

import typer

from .common import UsageError, check_writable, emit_json, err, need_int


def dimension(
    ckpt: Path = typer.Argument(..., help="Model file, checkpoint dir or run dir."),
    t_grid: Optional[str] = typer.Option(None, help="LO:HI:N (log-spaced) or a comma list of t "
                                         "(default: the trained range, 2 per decade)."),
    draws: int = typer.Option(100, help="Noise draws K per image and t (the paper used 1000)."),
    n_images: int = typer.Option(16, help="Profile the first N images of the evaluation split."),
    data: Optional[str] = typer.Option(None, help="Evaluation source (default: the model's own)."),
    split: Optional[str] = typer.Option(None, help="Split (default: the recipe's eval split)."),
    images: Optional[str] = typer.Option(None, help="Positions (0..N-1) of the images to plot, e.g. 0,3,7 "
                                         "(default: most to least probable)."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Per-image rows to FILE (.csv or .jsonl)."),
    plot: Optional[str] = typer.Option(None, help="Figure of d_eff and E log p_t against t (Fig. 5): .png, .pdf, "
                                       ".svg, ..."),
    batch_size: Optional[int] = typer.Option(None),
    seed: Optional[int] = typer.Option(None, help="Noise seed (noise is keyed by dataset index)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    as_json: bool = typer.Option(False, "--json", help="Print the dataset means as JSON on stdout."),
):
    """Local effective dimensionality d_eff(x, t) = E||x - D(x + sqrt(t) z, t)||^2 / t (paper Fig. 5).

    Examples:
      dsmctl dimension runs/quickstart --t-grid 1e-6:10:15 --draws 100 --out deff.csv --plot deff.png
    """
    from ..analysis.dimension import parse_t_grid, run, summary_text
    from ..device import resolve_device

    need_int(draws, "--draws", 1, 10 ** 6)
    need_int(n_images, "--n-images", 1)
    need_int(batch_size, "--batch-size", 1, 10 ** 7)
    need_int(seed, "--seed", 0, 2 ** 63 - 1)
    grid = parse_t_grid(t_grid) if t_grid else None
    try:
        pos = [int(v) for v in images.split(",") if v.strip()] if images else None
    except ValueError:
        pos = [-1]
    if pos is not None and (not pos or min(pos) < 0):
        raise UsageError(f"--images {images!r}: expected comma-separated positions 0..N-1, e.g. 0,3,7")
    if pos is not None:
        outside = sorted({p for p in pos if p >= n_images})
        if outside:
            raise UsageError(f"--images {images!r}: {', '.join(map(str, outside))} out of range; expected positions "
                             f"0..{n_images - 1} of the --n-images {n_images} evaluated images")
        if plot is None:
            raise UsageError(f"--images {images!r}: chooses the curves of --plot; give --plot FILE.png too")
    resolve_device(device)
    from ..outputs import IMAGE_SUFFIXES

    if out is not None:
        out = check_writable(out, "--out", kind="file", inputs=(ckpt,))
    if plot is not None:
        plot = check_writable(plot, "--plot", kind="file", suffixes=IMAGE_SUFFIXES, inputs=(ckpt,))
    if out is not None and plot is not None and out.absolute() == plot.absolute():
        raise UsageError(f"--out and --plot both name {out}; expected two files")
    res = run(ckpt, grid, draws, n_images, data, split, batch_size, seed, device, out, plot, pos,
              log=lambda text: err.print(text))
    err.print(summary_text(res))
    for key in ("out", "plot"):
        if key in res:
            err.print(f"wrote {res[key]}")
    if as_json:
        emit_json(res)
