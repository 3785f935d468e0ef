"""What eval-nll is asked to do (EvalRequest, checked before any work) and what an estimator returns (Estimate).

An estimator is a module in nll/ with `estimate(model, data, request) -> Estimate`, named in
nll/evaluate.py's ESTIMATORS. It receives a *resolved* request: the recipe's defaults filled in
(`EvalRequest.resolved`) and the normalization constant set by the orchestration.
Optional module attributes: NEEDS_ENERGY (default True; False when grad_y U is enough, e.g. pf-ode),
EVALUATES_AT_T (default True; False when U is read at t_min rather than at t), check(data, request)
(refusals that need the data), baseline(density, data, request) (the estimator on a closed-form density).
"""
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

from ..units import T_LIMIT, check_t, t_to_psnr

ANCHORS = ("paper", "gaussian")
PROPOSALS = ("uniform", "truncnorm")
WEIGHTS = ("auto", "ema", "raw")


class RequestError(ValueError):
    """A bad eval-nll option; the message names the option, its value and what was expected."""


@dataclass(frozen=True)
class EvalRequest:
    """eval-nll's options. None means "the model recipe's eval section" (resolved after loading the model)."""
    model: str | Path  # model file, checkpoint directory or run directory
    source: Optional[str] = None  # --data: evaluation source (default: the model's own data source)
    split: Optional[str] = None  # default: the recipe's eval split
    t: Optional[float] = None  # noise variance of the evaluated data (default: recipe eval.t, usually 0)
    psnr: Optional[float] = None  # the same as a PSNR in dB (give t or psnr, not both)
    t_max: Optional[float] = None  # where the constant is fixed (default: recipe eval.t_max)
    anchor: Optional[str] = None  # paper | gaussian (default: recipe eval.anchor)
    n_images: Optional[int] = None  # the first N images (default: recipe eval.n_images, None = all)
    start: int = 0  # skip the split's first START images (shards of a slow estimator; indices stay the split's)
    batch_size: Optional[int] = None  # default: recipe eval.batch_size
    seed: Optional[int] = None  # noise seed, noise keyed by dataset index (default: recipe eval.seed)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    weights: str = "auto"  # auto | ema | raw
    stored_constant: bool = False  # reuse the constant stored at the end of training
    baseline: bool = True  # also report a Gaussian fitted to the training split
    per_image: Optional[str | Path] = None  # write per-image energies to this .csv / .jsonl file
    estimator: str = "auto"  # a name in nll.evaluate.ESTIMATORS; auto: dequantized on 8-bit data at t = 0, else one-shot
    draws: int = 4  # dequantized: draws per image inside the bin; consistency: noise draws per level
    bound_t: Optional[float | str] = None  # dequantized: t of the density p_t integrated over the bins, or "auto"
    proposal: str = "uniform"  # dequantized: uniform | truncnorm inside the bin
    proposal_scale: Optional[float | str] = None  # dequantized truncnorm: its scale, or "auto"
    dequantize: bool = False  # pf-ode: start from x + u, u uniform in the bin (a bound, one draw per image)
    t_min: Optional[float] = None  # pf-ode: start of the ODE (default: recipe noise.t_min)
    rtol: float = 1e-5  # pf-ode: solver tolerances
    atol: float = 1e-5
    probes: Optional[int] = None  # pf-ode: Hutchinson probes; 0 = exact trace (default: exact for d <= 64, else 1)
    max_steps: int = 1000  # pf-ode: accepted steps per image before giving up
    consistency: bool = False  # also predict the PF-ODE - one-shot gap (nll/consistency.py)
    denoising_curve: bool = False  # also measure output vs input PSNR
    denoiser: Optional[str | Path] = None  # a denoiser checkpoint beside the model in the curve (implies the curve)
    psnr_grid: str = "0,10,20,30,40"  # input PSNRs (dB) of the denoising curve, comma-separated
    plots: Optional[str | Path] = None  # directory for figures
    # Filled by resolved() / the orchestration, not options:
    train_split: Optional[str] = None  # the recipe's training split (Gaussian fits, pf-ode prior)
    synthetic: Optional[dict] = field(default=None, compare=False)  # the recipe's synthetic spec for its own source
    constant: Optional[tuple] = None  # (c, stderr) nats: stored, or fixed on the evaluation data at t_max
    log: Optional[Callable] = field(default=None, compare=False, repr=False)  # progress lines

    @property
    def psnrs(self):
        """The denoising curve's input PSNRs, [] for the default grid."""
        return [float(v) for v in str(self.psnr_grid).split(",") if v.strip()]

    @property
    def wants_denoising(self):
        return bool(self.denoising_curve or self.denoiser)

    def check(self, estimators):
        """Refuse any bad value (RequestError naming the option) before a model or data is opened."""
        def need(ok, message):
            if not ok:
                raise RequestError(message)

        def finite(v):
            return v is not None and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        def integer(v):
            return isinstance(v, int) and not isinstance(v, bool)

        def noise_level(v, label, positive=False):
            try:
                check_t(v, label, positive)
            except ValueError as e:
                raise RequestError(str(e)) from None

        need(self.t is None or self.psnr is None, "give --t or --psnr, not both")
        if self.t is not None:
            noise_level(self.t, f"--t {self.t}")
        if self.psnr is not None:
            need(finite(self.psnr), f"--psnr {self.psnr}: expected a finite PSNR in dB")
            try:
                ok = math.isfinite(self.noise_t)
            except OverflowError:
                ok = False
            need(ok and self.noise_t <= T_LIMIT, f"--psnr {self.psnr}: noise variance 10^(-PSNR/10) above "
                 f"{T_LIMIT:g}; expected a PSNR of at least {t_to_psnr(T_LIMIT):g} dB")
        if self.t_max is not None:
            noise_level(self.t_max, f"--t-max {self.t_max}", positive=True)
        if self.t_min is not None:
            noise_level(self.t_min, f"--t-min {self.t_min}", positive=True)
        if self.t_min is not None and self.t_max is not None:
            need(self.t_min < self.t_max, f"--t-min {self.t_min:g}: expected below --t-max {self.t_max:g}")
        need(self.anchor is None or self.anchor in ANCHORS, f"--anchor {self.anchor!r}: expected paper or gaussian")
        for name in ("n_images", "batch_size"):
            v = getattr(self, name)
            need(v is None or (integer(v) and v >= 1), f"--{name.replace('_', '-')} {v}: expected an integer >= 1")
        need(integer(self.start) and self.start >= 0, f"--start {self.start}: expected an integer >= 0")
        need(self.seed is None or integer(self.seed), f"--seed {self.seed}: expected an integer")
        need(self.weights in WEIGHTS, f"--weights {self.weights!r}: expected one of {', '.join(WEIGHTS)}")
        need(self.estimator == "auto" or self.estimator in estimators,
             f"--estimator {self.estimator!r}: expected auto or one of {', '.join(estimators)}")
        need(integer(self.draws) and self.draws >= 1, f"--draws {self.draws}: expected an integer >= 1")
        need(integer(self.max_steps) and self.max_steps >= 1, f"--max-steps {self.max_steps}: expected an integer >= 1")
        need(self.probes is None or (integer(self.probes) and self.probes >= 0),
             f"--probes {self.probes}: expected an integer >= 0 (0 = exact trace)")
        for name in ("rtol", "atol"):
            v = getattr(self, name)
            need(finite(v) and v > 0, f"--{name} {v}: expected a positive finite tolerance")
        if self.estimator == "dequantized":
            need(not self.noise_t, "--estimator dequantized evaluates clean 8-bit images (t = 0); drop --t/--psnr "
                 "(the density's own noise level is --bound-t)")
        if self.bound_t is not None and self.bound_t != "auto":
            try:
                check_t(self.bound_t if finite(self.bound_t) else None, f"--bound-t {self.bound_t}")
            except ValueError as e:
                raise RequestError(f"{e} (or auto)") from None
        need(self.proposal in PROPOSALS, f"--proposal {self.proposal!r}: expected one of {', '.join(PROPOSALS)}")
        if self.proposal_scale is not None and self.proposal_scale != "auto":
            need(finite(self.proposal_scale) and 0 < self.proposal_scale <= 1,
                 f"--proposal-scale {self.proposal_scale}: expected auto or a positive scale (pixels, at most 1)")
        need(self.proposal != "truncnorm" or self.proposal_scale is not None,
             "--proposal truncnorm needs --proposal-scale (a number, or auto: chosen on held-out training images)")
        need(not self.dequantize or self.estimator == "pf-ode", "--dequantize goes with --estimator pf-ode "
             "(the dequantized estimator always dequantizes)")
        need(not (self.dequantize and self.noise_t), "--dequantize evaluates clean 8-bit images; drop --t/--psnr")
        try:
            grid = self.psnrs
        except ValueError:
            grid = None
        need(grid is not None and all(math.isfinite(v) for v in grid),
             f"--psnr-grid {self.psnr_grid!r}: expected comma-separated PSNRs in dB")
        check_device(self.device)
        if self.per_image is not None:
            check_writable_file("--per-image", self.per_image, inputs=(self.model, self.denoiser))
        if self.plots is not None:
            check_writable_dir("--plots", self.plots)
        if self.denoiser is not None:
            need(Path(self.denoiser).exists(), f"--denoiser {self.denoiser}: no such checkpoint file or directory")
        return self

    @property
    def noise_t(self):
        """The requested noise variance: t, or 10^(-psnr/10), or None (the recipe's)."""
        if self.psnr is not None:
            return 10.0 ** (-self.psnr / 10.0)
        return self.t

    def resolved(self, meta):
        """A copy with the recipe's defaults filled in (t, t_max, anchor, n_images, batch_size, seed, t_min,
        source, train_split, synthetic); psnr is folded into t."""
        recipe = meta["recipe"]
        ev, data = recipe["eval"], recipe["data"]
        t = self.noise_t
        source = self.source or data["source"]
        r = replace(self, t=ev["t"] if t is None else t, psnr=None, t_max=self.t_max or ev["t_max"],
                    anchor=self.anchor or ev["anchor"], n_images=self.n_images or ev["n_images"],
                    batch_size=self.batch_size or ev["batch_size"], seed=ev["seed"] if self.seed is None else self.seed,
                    t_min=self.t_min or recipe["noise"]["t_min"], source=source, split=self.split or data["eval_split"],
                    train_split=data["train_split"],
                    synthetic=data.get("synthetic") if source == data["source"] else None)
        if r.estimator == "dequantized" and r.t:
            raise RequestError("--estimator dequantized evaluates clean 8-bit images (t = 0); drop --t/--psnr")
        if r.bound_t is None:
            r = replace(r, bound_t=ev.get("bound_t", 0.0))
        return r

    def for_data(self, quantization_bits):
        """estimator "auto" made concrete: the dequantized bound on 8-bit images at t = 0, else the one-shot."""
        if self.estimator != "auto":
            return self
        return replace(self, estimator="dequantized" if quantization_bits == 8 and not self.t else "one-shot")

    def for_denoiser(self, quantization_bits):
        """A denoiser has only the PF-ODE; "auto" on clean 8-bit images is its dequantized form (a bound), never the
        plug-in at the grid point. An explicit --estimator pf-ode keeps what was asked."""
        if self.estimator != "auto":
            return self
        return replace(self, estimator="pf-ode", dequantize=self.dequantize or (quantization_bits == 8 and not self.t))


def check_device(device):
    """Refuse a device this machine does not have (device.resolve_device's check), as a RequestError."""
    from ..device import DeviceError, resolve_device

    try:
        resolve_device(device)
    except DeviceError as e:
        raise RequestError(str(e)) from None


def check_writable_file(option, path, inputs=()):
    """The shared output rules (dsmctl/outputs.py): a .csv/.jsonl file, never a link, device, input or run file."""
    from ..outputs import OutputError, check_file

    try:
        check_file(path, option, inputs=inputs)
    except OutputError as e:
        raise RequestError(str(e)) from None


def check_writable_dir(option, path):
    from ..outputs import OutputError, check_dir

    try:
        check_dir(path, option)
    except OutputError as e:
        raise RequestError(str(e)) from None


@dataclass
class Estimate:
    """One estimator's answer: a result with to_dict(), per-image values keyed by dataset index, its protocol."""
    result: object  # NLLResult, DequantResult, ODEResult...: a dataclass with to_dict()
    indices: object  # (N,) dataset indices
    nll: object  # (N,) -log p per image in nats (NaN where an image failed)
    seconds: float
    protocol: str  # one line; eval-nll appends the weights
    columns: dict = field(default_factory=dict)  # extra per-image columns for --per-image (e.g. nfe, status)
    report: dict = field(default_factory=dict)  # extra entries of eval-nll's document, placed before "nll"
