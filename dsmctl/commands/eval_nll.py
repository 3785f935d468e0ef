"""`dsmctl eval-nll`: negative log-likelihood of a trained model, plus optional extra analyses."""
from pathlib import Path
from typing import Optional

import typer

from .common import emit_json, err, render


def number_or_auto(text):
    """A --bound-t / --proposal-scale value: "auto", a number, or the text itself (refused by the request check)."""
    if text is None or text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        return text


def eval_nll(
    ckpt: Path = typer.Argument(..., help="Model file, checkpoint dir or run dir."),
    data: Optional[str] = typer.Option(None, help="Evaluation source (default: the model's own data source)."),
    split: Optional[str] = typer.Option(None, help="Split (default: the recipe's eval split)."),
    t: Optional[float] = typer.Option(None, help="Noise variance of the evaluated data (default: recipe, 0)."),
    psnr: Optional[float] = typer.Option(None, help="Noise level as PSNR in dB (instead of --t)."),
    t_max: Optional[float] = typer.Option(None, help="Where the constant is fixed (default: recipe, 1e3)."),
    anchor: Optional[str] = typer.Option(None, help="paper | gaussian (default: recipe)."),
    n_images: Optional[int] = typer.Option(None, help="Evaluate the first N images only (from --start)."),
    start: int = typer.Option(0, help="Skip the first START images: shards of a slow estimator (pf-ode) run as "
                              "separate processes; dataset indices, noise and probes are those of the full run."),
    batch_size: Optional[int] = typer.Option(None),
    seed: Optional[int] = typer.Option(None, help="Noise seed (noise is keyed by dataset index)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    weights: str = typer.Option("auto", help="auto (EMA weights when the run has them) | ema | raw."),
    stored_constant: bool = typer.Option(False, help="Reuse the constant stored at the end of training."),
    baseline: bool = typer.Option(True, help="Also report a Gaussian fitted to the training split."),
    per_image: Optional[str] = typer.Option(None, help="Write per-image energies to FILE (.csv or .jsonl)."),
    estimator: str = typer.Option("auto", help="auto (the bound on 8-bit images at t = 0, else one-shot; a denoiser: its "
                                  "PF-ODE, from x + u on 8-bit images) | one-shot "
                                  "(the paper's; on 8-bit data a plug-in, not a bound) | dequantized (8-bit data: "
                                  "importance-weighted upper bound) | pf-ode (probability-flow ODE)."),
    draws: int = typer.Option(4, help="dequantized: draws K per image inside the bin (the bound at K = 1, 4, 16, 64 "
                              "up to K is reported); --consistency: noise draws per level."),
    bound_t: Optional[str] = typer.Option(None, help="dequantized: noise level t of the density p_t integrated over "
                                          "the bins (default: recipe eval.bound_t, 0), or auto: chosen on held-out "
                                          "training images."),
    proposal: str = typer.Option("uniform", help="dequantized: uniform | truncnorm (a normal truncated to the bin)."),
    proposal_scale: Optional[str] = typer.Option(None, help="dequantized truncnorm: its scale in pixels, or auto "
                                                 "(chosen on held-out training images)."),
    dequantize: bool = typer.Option(False, "--dequantize", help="pf-ode: start from x + u, u uniform in the bin: "
                                    "an upper bound on the discrete NLL (one draw per image)."),
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
    """Negative log-likelihood in bits/dim. On 8-bit images: an importance-weighted upper bound on the discrete NLL
    (--draws forward passes per image), with the paper's one-shot plug-in beside it, labelled, and flags for
    results no normalized model can give. Elsewhere: one forward pass per image (the paper's protocol).

    Examples:
      dsmctl eval-nll runs/quickstart-1a2b3c4d5e6f
      dsmctl eval-nll runs/fm --draws 64 --bound-t auto
      dsmctl eval-nll runs/fm --proposal truncnorm --proposal-scale auto
      dsmctl eval-nll runs/imagenet64 --estimator one-shot            # the paper's number (plug-in)
      dsmctl eval-nll run/model.safetensors --data data/imagenet64 --split validation --json
      dsmctl eval-nll run --psnr 30 --per-image logp.csv
      dsmctl eval-nll run --estimator pf-ode --dequantize --n-images 200
      dsmctl eval-nll run --estimator pf-ode --probes 1 --rtol 1e-5 --n-images 200
      dsmctl eval-nll run --estimator pf-ode --start 200 --n-images 200 --per-image shard2.csv
      dsmctl eval-nll run --consistency
      dsmctl eval-nll run --denoising-curve --denoiser runs/den --plots figs/
    """
    from ..evaluation import evaluate
    from ..nll.report import summary_lines
    from ..nll.request import EvalRequest

    request = EvalRequest(
        ckpt, source=data, split=split, t=t, psnr=psnr, t_max=t_max, anchor=anchor, n_images=n_images, start=start,
        batch_size=batch_size, seed=seed, device=device, weights=weights, stored_constant=stored_constant,
        baseline=baseline, per_image=per_image, estimator=estimator, draws=draws, bound_t=number_or_auto(bound_t),
        proposal=proposal, proposal_scale=number_or_auto(proposal_scale), dequantize=dequantize, t_min=t_min, rtol=rtol, atol=atol,
        probes=probes, max_steps=max_steps, consistency=consistency, denoising_curve=denoising_curve,
        denoiser=denoiser, psnr_grid=psnr_grid, plots=plots)
    res = evaluate(request, log=lambda text: err.print(text))
    render(summary_lines(res, ckpt))
    if as_json:
        emit_json(res)
