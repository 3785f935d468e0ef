"""`dsmctl eval-nll`: negative log-likelihood of a trained model, plus optional extra analyses."""
from pathlib import Path
from typing import Optional

import typer

from .common import UsageError, emit_json, err, render


def eval_nll(
    ckpt: Path = typer.Argument(..., help="Model file, checkpoint dir or run dir."),
    data: Optional[str] = typer.Option(None, help="Evaluation source (default: the model's own data source)."),
    split: Optional[str] = typer.Option(None, help="Split (default: the recipe's eval split)."),
    t: Optional[float] = typer.Option(None, help="Noise variance of the evaluated data (default: recipe, 0)."),
    psnr: Optional[float] = typer.Option(None, help="Noise level as PSNR in dB (instead of --t)."),
    t_max: Optional[float] = typer.Option(None, help="Where the constant is fixed (default: recipe, 1e3)."),
    anchor: Optional[str] = typer.Option(None, help="paper | gaussian (default: recipe)."),
    n_images: Optional[int] = typer.Option(None, help="Evaluate the first N images only."),
    batch_size: Optional[int] = typer.Option(None),
    seed: Optional[int] = typer.Option(None, help="Noise seed (noise is keyed by dataset index)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    weights: str = typer.Option("auto", help="auto (EMA weights when the run has them) | ema | raw."),
    stored_constant: bool = typer.Option(False, help="Reuse the constant stored at the end of training."),
    baseline: bool = typer.Option(True, help="Also report a Gaussian fitted to the training split."),
    per_image: Optional[Path] = typer.Option(None, help="Write per-image energies to FILE (.csv or .jsonl)."),
    estimator: str = typer.Option("one-shot", help="one-shot (the paper's) | dequantized (8-bit data, a bound) | "
                                  "pf-ode (probability-flow ODE)."),
    draws: int = typer.Option(4, help="dequantized: uniform noise draws per image; --consistency: noise draws per level."),
    t_min: Optional[float] = typer.Option(None, help="pf-ode: start of the ODE (default: the recipe's noise.t_min)."),
    rtol: float = typer.Option(1e-5, help="pf-ode: relative tolerance of the adaptive solver."),
    atol: float = typer.Option(1e-5, help="pf-ode: absolute tolerance of the adaptive solver."),
    probes: Optional[int] = typer.Option(None, help="pf-ode: Hutchinson probes per image; 0 = exact trace "
                                         "(default: exact for d <= 64, else 1 probe)."),
    max_steps: int = typer.Option(1000, help="pf-ode: accepted steps per image before giving up."),
    consistency: bool = typer.Option(False, "--consistency", help="Also predict the PF-ODE − one-shot gap from the "
                                     "heat-equation residual (Stein form, --draws noise draws; minutes, not hours)."),
    denoising_curve: bool = typer.Option(False, "--denoising-curve", help="Also measure output vs input PSNR (Table 1)."),
    denoiser: Optional[Path] = typer.Option(None, help="A denoiser checkpoint to put beside the model in the curve."),
    psnr_grid: str = typer.Option("0,10,20,30,40", help="Input PSNRs (dB) of the denoising curve."),
    plots: Optional[Path] = typer.Option(None, help="Write figures (log p histogram, image strip, curves) to DIR."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
):
    """Negative log-likelihood in bits/dim, one forward pass per image (the paper's protocol) by default.

    Examples:
      dsmctl eval-nll runs/quickstart-1a2b3c4d5e6f
      dsmctl eval-nll run/model.safetensors --data data/imagenet64 --split validation --json
      dsmctl eval-nll run --psnr 30 --per-image logp.csv
      dsmctl eval-nll run --estimator dequantized --draws 8
      dsmctl eval-nll run --estimator pf-ode --probes 1 --rtol 1e-5 --n-images 200
      dsmctl eval-nll run --consistency
      dsmctl eval-nll run --denoising-curve --denoiser runs/den --plots figs/
    """
    from .. import units
    from ..nll.evaluate import ESTIMATORS, eval_nll as run_eval

    if t is not None and psnr is not None:
        raise UsageError("give --t or --psnr, not both")
    if psnr is not None:
        t = units.psnr_to_t(psnr)
    if anchor is not None and anchor not in ("paper", "gaussian"):
        raise UsageError(f"--anchor {anchor!r}: expected paper or gaussian")
    if estimator not in ESTIMATORS:
        raise UsageError(f"--estimator {estimator!r}: expected one of {', '.join(ESTIMATORS)}")
    if draws < 1 or max_steps < 1 or (probes is not None and probes < 0) or rtol <= 0 or atol <= 0:
        raise UsageError("--draws and --max-steps must be >= 1, --probes >= 0, --rtol and --atol > 0")
    if t_min is not None and t_min <= 0:
        raise UsageError(f"--t-min {t_min}: expected a positive noise variance")
    ode = {"t_min": t_min, "rtol": rtol, "atol": atol, "max_steps": max_steps}
    if probes is not None:
        ode["probes"] = probes or None
    den = None
    if denoising_curve or denoiser:
        try:
            den = {"psnrs": [float(v) for v in psnr_grid.split(",") if v.strip()], "denoiser": denoiser}
        except ValueError:
            raise UsageError(f"--psnr-grid {psnr_grid!r}: expected comma-separated PSNRs in dB") from None
    res = run_eval(ckpt, data, split, t, t_max, anchor, n_images, batch_size, seed, device, baseline, per_image,
                   stored_constant, weights, estimator=estimator, draws=draws, ode=ode, denoising=den, plots=plots,
                   log=lambda text: err.print(text), consistency=consistency)
    from ..nll.evaluate import summary_lines

    render(summary_lines(res, ckpt))
    if as_json:
        emit_json(res)
