"""The public Python API: load a model, open data, normalized log-probabilities, energies, denoising, samples.

    import dsmctl
    m = dsmctl.load("runs/quickstart")
    x = dsmctl.open_data("demo", split="test")[:16]
    m.log_prob(x)          # log p(x) in nats per image, with the constant stored in the model file

Conventions (as the CLI's, see units.py): images are float tensors (N, C, H, W) with pixels in [0, 1] (an 8-bit
value k is k/255); t is the per-pixel noise variance; energies and log-probabilities are nats per image.
Everything here is the code the commands run: log_prob goes through nll/likelihood.py as eval-nll's one-shot
estimator, bits_per_dim through units.py, sample through sample/generate.py and sample/samplers.py.
"""
import math
from pathlib import Path

import numpy as np
import torch

from . import units
from .api_checks import (batch as _batch, count as _count, is_int as _is_int, noise_level as _noise_level,
                         on_8_bit_grid as _on_8_bit_grid)
from .data.arrays import ArrayData

DEFAULT_BATCH = 256


def load(path, weights="auto", device="auto"):
    """A trained model from a run directory, a checkpoint directory or a model file.

    weights: "auto" (EMA weights where the run has them) | "ema" | "raw"; device: "auto" | "cpu" | "cuda" | "cuda:N".
    """
    from .device import resolve_device
    from .nn.model_file import WEIGHTS, load_model, resolve_model_path

    if not isinstance(path, (str, Path)):
        raise ValueError(f"path={path!r}: expected a run directory, checkpoint directory or model file path")
    if weights not in WEIGHTS:
        raise ValueError(f"weights={weights!r}: expected one of {', '.join(WEIGHTS)}")
    device = resolve_device(device, label=f"device={device!r}")
    file = resolve_model_path(path, weights)
    net, meta = load_model(file, device, weights)
    return Model(net, meta, file, device)


def open_data(source, split="test", n=None):
    """A split of a data source (a name such as "demo", a prepared directory, ...) as an Images view:
    view[i], view[:16], view[[3, 7]] are float tensors in the models' convention; len(view) images."""
    from . import data as data_mod

    if not isinstance(source, (str, Path)):
        raise ValueError(f"source={source!r}: expected a data source name or a prepared directory")
    if not isinstance(split, str):
        raise ValueError(f"split={split!r}: expected a split name such as 'train' or 'test'")
    data = data_mod.open_split(str(source), split)
    if n is not None:
        if not _is_int(n) or n < 1:
            raise ValueError(f"n={n!r}: expected an integer >= 1")
        data = data.subset(np.arange(min(n, len(data))))
    return Images(data)


class Images:
    """A read-only view of a data split; indexing returns float32 tensors (N, C, H, W) with pixels in [0, 1]."""

    def __init__(self, data):
        self.data = data

    def __len__(self):
        return len(self.data)

    def __getitem__(self, key):
        positions = np.arange(len(self.data))[key]
        if np.ndim(positions) == 0:
            return self.data.batch(np.array([positions]))[0]
        return self.data.batch(positions)

    @property
    def shape(self):
        return self.data.shape

    @property
    def quantization_bits(self):
        """8 for 8-bit images (bits/dim then gets +8), None for continuous data."""
        return self.data.quantization_bits

    @property
    def name(self):
        return self.data.name

    @property
    def fingerprint(self):
        return self.data.fingerprint

    def indices(self):
        """Dataset indices of the images in this view (eval-nll's per-image files are keyed by them)."""
        return self.data.index(np.arange(len(self.data)))

    def __repr__(self):
        return f"Images({self.name}, {len(self)} x {self.shape}, fingerprint {self.fingerprint})"


class Model:
    """A loaded model: `net` answers net(y, t, need=...) (nn/output.py); `meta` is the model file's metadata."""

    def __init__(self, net, meta, path, device):
        self.net, self.meta, self.path, self.device = net, meta, Path(path), device

    def __repr__(self):
        return f"Model({self.path}, {self.kind}, shape {self.shape}, step {self.meta.get('step')})"

    @property
    def shape(self):
        return tuple(self.meta["shape"])

    @property
    def d(self):
        return math.prod(self.shape)

    @property
    def kind(self):
        return self.meta["recipe"]["model"]["kind"]

    @property
    def constant(self):
        """The normalization constant c (nats per image) stored at the end of training: -log p_t = U + c."""
        norm = self.meta.get("normalization")
        if not norm:
            raise ValueError(f"{self.path}: the model file has no stored normalization constant "
                             "(eval-nll without --stored-constant fixes one on the evaluation data)")
        return norm["constant"]

    def energy(self, y, t=0.0, batch_size=DEFAULT_BATCH):
        """U(y, t) in nats per image (float64, CPU), without the constant; y: images (N, C, H, W) or one image."""
        return self._energy("y", y, t, batch_size)

    def log_prob(self, x, t=0.0, batch_size=DEFAULT_BATCH):
        """Normalized log p_t(x) in nats per image (float64, CPU), with the stored constant: -(U(x, t) + c).

        t = 0: the density of clean images; t > 0: the density p_t of noisy images y = x + sqrt(t) z, evaluated at
        the given images (add the noise yourself). eval-nll's one-shot per-image values are the same numbers."""
        from .nll.likelihood import neg_log_p

        c = self.constant
        return units.energy_to_log_p(neg_log_p(self._energy("x", x, t, batch_size), c))

    def bits_per_dim(self, x, t=0.0, quantization_bits="auto", protocol="auto", draws=4, bound_t=None,
                     proposal="uniform", scale=None, seed=None, batch_size=DEFAULT_BATCH, rtol=1e-5, atol=1e-5,
                     probes=None, prior_data=None):
        """NLL in bits/dim per image, as eval-nll reports it.

        protocol: "auto" (an energy: the bound for 8-bit images at t = 0, else the plug-in; a denoiser: "pf-ode"),
        "bound" (eval-nll's default on 8-bit data: an importance-weighted upper bound on the discrete NLL, -log2 of
        the estimated bin probability per dim, `draws` forward passes per image, noise keyed by dataset index:
        equal to eval-nll's per-image values), "plug-in" (-log2 p_t(x)/d, +8 for 8-bit images at t = 0: the
        paper's protocol, not a bound) or "pf-ode" (the probability-flow ODE from the recipe's t_min, which needs
        only the score: a denoiser's only likelihood; on clean 8-bit images it starts from x + u, u the bound's
        first uniform draw, so it is an upper bound on the discrete NLL of the ODE's density, eval-nll's default
        for a denoiser and equal to its per-image values; rtol, atol and probes as --rtol, --atol, --probes:
        probes None = exact trace for d <= 64, else 1 Hutchinson probe; a non-converged image gives NaN).
        bound_t, seed: default to the recipe's eval.bound_t and eval.seed; proposal: uniform | truncnorm (with
        scale). quantization_bits: "auto" (8 when x comes from 8-bit data: a uint8 tensor, an Images view of
        8-bit data or, for float tensors, the model's own 8-bit training data; None for continuous data), 8, None.
        prior_data (pf-ode with the recipe's gaussian anchor): the images its prior at t_max is fitted on, an
        Images view, a data source or a tensor (default: the model's training split, as eval-nll)."""
        from .nll.likelihood import neg_log_p

        if quantization_bits not in ("auto", None) and not (_is_int(quantization_bits) and quantization_bits > 0):
            raise ValueError(f"quantization_bits={quantization_bits!r}: expected 'auto', None or a positive integer")
        if protocol not in ("auto", "bound", "plug-in", "pf-ode"):
            raise ValueError(f"protocol={protocol!r}: expected 'auto', 'bound', 'plug-in' or 'pf-ode'")
        if quantization_bits == "auto":
            quantization_bits = self._quantization_bits(x) if not _noise_level(t) else None
        if protocol == "auto" and self.kind == "denoiser":
            protocol = "pf-ode"
        if protocol == "auto":
            protocol = "bound" if quantization_bits == 8 and not _noise_level(t) else "plug-in"
        if protocol == "bound":
            return self._bound(x, t, quantization_bits, draws, bound_t, proposal, scale, seed, batch_size)
        if protocol == "pf-ode":
            return self._pf_ode(x, t, quantization_bits, rtol, atol, probes, seed, batch_size, prior_data)
        c = self.constant
        nll = neg_log_p(self._energy("x", x, t, batch_size), c)
        return units.bits_per_dim(nll, self.d, quantization_bits)

    def _bound(self, x, t, qbits, draws, bound_t, proposal, scale, seed, batch_size):
        from .nll.dequantize import PROPOSALS, dequantized_nll

        if qbits != 8 or _noise_level(t):
            raise ValueError("protocol='bound' needs clean 8-bit images (t = 0, quantization_bits 8)")
        if not (_is_int(draws) and draws >= 1):
            raise ValueError(f"draws={draws!r}: expected an integer >= 1")
        if proposal not in PROPOSALS or (proposal == "truncnorm" and not (isinstance(scale, (int, float)) and 0 < scale <= 1)):
            raise ValueError(f"proposal={proposal!r}, scale={scale!r}: expected uniform, or truncnorm with a scale in (0, 1]")
        ev = self.meta["recipe"]["eval"]
        bound_t = ev.get("bound_t", 0.0) if bound_t is None else _noise_level(bound_t)
        seed = ev["seed"] if seed is None else seed
        if not _is_int(seed):
            raise ValueError(f"seed={seed!r}: expected an integer")
        self._need_energy("bound")
        data, single = self._images("x", x)
        data = _on_8_bit_grid(data, "bound")
        with torch.no_grad():
            _, _, nll = dequantized_nll(self.net, data, draws, constant=(self.constant, 0.0), anchor="stored",
                                        batch_size=_batch(batch_size), seed=seed, device=self.device,
                                        return_per_image=True, t=bound_t, proposal=proposal, scale=scale)
        bits = units.bits_per_dim(nll, self.d, 8)
        return bits[0] if single else bits

    def _pf_ode(self, x, t, qbits, rtol, atol, probes, seed, batch_size, prior_data):
        from .nll.pfode import anchor_prior, pf_ode_nll, probes_for

        rec = self.meta["recipe"]
        seed = rec["eval"]["seed"] if seed is None else seed
        for name, v in (("rtol", rtol), ("atol", atol)):
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1):
                raise ValueError(f"{name}={v!r}: expected a number in (0, 1)")
        if not (probes is None or (_is_int(probes) and probes >= 0)):
            raise ValueError(f"probes={probes!r}: expected None or an integer >= 0 (0 = exact trace)")
        if not _is_int(seed):
            raise ValueError(f"seed={seed!r}: expected an integer")
        noisy_t = _noise_level(t)
        dequantize = qbits == 8 and not noisy_t
        data, single = self._images("x", x)
        if dequantize:
            data = _on_8_bit_grid(data, "pf-ode")
        anchor, t_max, t_min = rec["eval"]["anchor"], rec["eval"]["t_max"], rec["noise"]["t_min"]
        prior = anchor_prior(anchor, self._prior_data(prior_data) if anchor == "gaussian" else None, data.shape)
        with torch.enable_grad():
            _, _, energy, _, status = pf_ode_nll(self.net, data, prior, t_min, t_max, rtol, atol,
                                                 probes_for(probes, data.d), _batch(batch_size), seed, self.device,
                                                 noisy_t=noisy_t, dequantize=dequantize)
        bits = units.bits_per_dim(energy.double(), self.d, None if noisy_t else qbits)
        bits[status != 0] = float("nan")
        return bits[0] if single else bits

    def _prior_data(self, prior_data):
        if prior_data is None:
            return self._training_split("protocol='pf-ode' (its prior's fit)", "pass prior_data=")
        if isinstance(prior_data, (str, Path)):
            return open_data(str(prior_data), self.meta["recipe"]["data"]["train_split"]).data
        return self._images("prior_data", prior_data)[0]

    def denoise(self, y, t, batch_size=DEFAULT_BATCH):
        """E[x | y] = y - t grad_y U(y, t) (Tweedie / Miyasawa), float32 on the CPU, shaped like y."""
        data, single = self._images("y", y)
        t = _noise_level(t)
        out = torch.cat([self.net(b, t, need=("denoised",)).denoised.detach().cpu()
                         for _, b in data.batches(_batch(batch_size), self.device)])
        return out[0] if single else out

    def sample(self, n=None, seed=0, seeds=None, batch_size=64, **options):
        """Images (N, C, H, W), one per seed (seeds seed .. seed+n-1, or `seeds`), as `dsmctl sample` writes them
        (8-bit images rounded to k/255). options: the sampler settings of `dsmctl sample` (sampler="ode", solver,
        steps, t_max, t_min, schedule, init, h0, h_schedule, beta, noise_estimate, max_iters, langevin_steps,
        step_scale, predictor), same defaults."""
        from .sample import files as sample_files
        from .sample import limits
        from .sample.generate import quantize, sampler_setup
        from .sample.request import SampleRequest
        from .sample.samplers import SamplerConfig, sample

        if (n is None) == (seeds is None):
            raise ValueError("sample: give n (seeds seed .. seed+n-1) or seeds, not both")
        unknown = set(options) - set(SamplerConfig.__dataclass_fields__)
        if unknown:
            raise ValueError(f"sample: unknown option(s) {', '.join(sorted(unknown))}; expected SamplerConfig fields")
        # n and seeds counted and budgeted before they are expanded (sample/limits.py, as dsmctl sample)
        if seeds is None:
            n, seed = limits.check_n_seed(n, seed)
            limits.check_count(n, math.prod(self.shape), f"n={n}")
            seeds = list(range(seed, seed + n))
        else:
            seeds = list(seeds) if not isinstance(seeds, (str, bytes)) else None
            if not seeds or not all(_is_int(s) and 0 <= s <= limits.MAX_SEED for s in seeds):
                raise ValueError(f"seeds: expected a non-empty list of integers in 0..{limits.MAX_SEED:,}")
            limits.check_count(len(seeds), math.prod(self.shape), f"seeds (a list of {len(seeds):,})")
        given = {k: v for k, v in options.items() if v is not None}  # None: the default, as sampler_setup reads it
        request = SampleRequest(self.path, seeds=seeds, batch_size=batch_size, python=True, **given).check()
        cfg, start, _ = sampler_setup(self.meta, self.path, **request.sampler_options())
        image = sample_files.is_image_shape(self.shape)
        out = sample(self.net, request.seed_list(), self.shape, cfg, request.batch_size, self.device, clip=image,
                     start=start)
        return quantize(out["x"], self.shape)

    def ood_features(self, x, t_grid=(0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0), draws=1, bound_draws=2, seed=0,
                     batch_size=128, transforms="auto"):
        """Per-image OOD features (analysis/ood/features.py): dict with names, values (N, F), nll_bits, bound_bits,
        zlib_bits, base_bits (None where they do not apply: the bound and zlib need 8-bit images, e.g. an Images view
        or a uint8 tensor), indices and forward_passes per image. transforms: "auto", "none", a comma string or a
        list of names (`dsmctl score --transforms`)."""
        from .analysis.ood.features import features, parse_transforms

        self._need_energy("OOD features")
        data, _ = self._images("x", x)
        turns = parse_transforms(transforms, self.shape, "transforms")
        return features(self.net, data, list(t_grid), self._constant_or_zero(), _count(draws, "draws"),
                        _count(seed, "seed", 0), _batch(batch_size), self.device, _count(bound_draws, "bound_draws", 0),
                        bound_t=self.meta["recipe"]["eval"].get("bound_t", 0.0), transforms=turns)

    def fit_detector(self, x, t_grid=(0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0), draws=1, bound_draws=2, seed=0,
                     batch_size=128, transforms="auto"):
        """The OOD detector of `dsmctl score` fitted on in-distribution images x (held out from training, ideally);
        det.save(path) writes it, analysis.ood.detector.Detector.load(path) reads it back."""
        from .analysis.ood.run import fit_detector

        feat = self.ood_features(x, t_grid, draws, bound_draws, seed, batch_size, transforms)
        opts = {"t_grid": list(t_grid), "draws": draws, "bound_draws": bound_draws, "seed": seed,
                "transforms": feat["transforms"]}
        return fit_detector(feat, opts, getattr(x, "name", "array"), self._model_info())

    def ood_scores(self, x, detector, batch_size=128):
        """{score name: (N,) numpy array} as `dsmctl score` writes per image, higher = more outlying; detector: a
        fitted detector or the path of one (OUT/detector.safetensors), made for this model file."""
        from .analysis.ood.detector import Detector
        from .analysis.ood.run import check_detector, scores

        det = detector if isinstance(detector, Detector) else Detector.load(detector)
        check_detector(det, self._model_info(), getattr(detector, "name", detector))
        m = det.meta
        return scores(self.ood_features(x, m["t_grid"], m["draws"], m["bound_draws"], m["seed"], batch_size,
                                        list(m.get("transforms", []))), det)

    def _model_info(self):
        from .analysis.ood.run import model_id

        return {"path": str(self.path), "sha256": model_id(self.path), "step": self.meta.get("step")}

    def _constant_or_zero(self):
        return float((self.meta.get("normalization") or {}).get("constant", 0.0))

    def _energy(self, name, y, t, batch_size):
        from .nll.likelihood import energy_at

        self._need_energy("energy" if name == "y" else "log p")
        data, single = self._images(name, y)
        t = _noise_level(t)
        with torch.no_grad():
            u = torch.cat([energy_at(self.net, b, t) for _, b in data.batches(_batch(batch_size), self.device)])
        return u[0] if single else u

    # -- argument checks -------------------------------------------------------------------------------------
    def _need_energy(self, what):
        if self.kind == "denoiser":
            raise ValueError(f"{self.path}: a denoiser (score-network) model has no energy, hence no {what}; "
                             "it has denoise() and sample()")

    def _images(self, name, x):
        """(ArrayData over x, x was a single image)."""
        if isinstance(x, Images):
            x = x.data
        if isinstance(x, ArrayData):
            data, single = x, False
        else:
            if isinstance(x, np.ndarray):
                x = torch.from_numpy(x)
            if not isinstance(x, torch.Tensor):
                raise ValueError(f"{name}: expected a tensor of images shaped (N, {', '.join(map(str, self.shape))}), "
                                 f"got {type(x).__name__}")
            single = tuple(x.shape) == self.shape
            x = x[None] if single else x
            if x.dtype != torch.uint8 and not x.is_floating_point():
                raise ValueError(f"{name}: expected float images in [0, 1] (or uint8), got dtype {x.dtype}")
            if x.is_floating_point() and not torch.isfinite(x).all():
                raise ValueError(f"{name}: contains NaN or infinite values")
            data = ArrayData.wrap(x.detach().cpu() if x.dtype == torch.uint8 else x.detach().cpu().float())
        if tuple(data.shape) != self.shape or len(data) == 0:
            raise ValueError(f"{name}: images of shape {tuple(data.shape)} ({len(data)} of them), but the model was "
                             f"trained on {self.shape}; expected (N, {', '.join(map(str, self.shape))}) with N >= 1")
        return data, single

    def _quantization_bits(self, x):
        if isinstance(x, Images):
            return x.quantization_bits
        if isinstance(x, ArrayData):
            return x.quantization_bits
        if isinstance(x, (torch.Tensor, np.ndarray)) and x.dtype in (torch.uint8, np.uint8):
            return 8
        return self.training_quantization_bits

    @property
    def training_quantization_bits(self):
        """8 when the model was trained on 8-bit images, None for continuous data (opens the training split)."""
        if not hasattr(self, "_train_qbits"):
            self._train_qbits = self._training_split("quantization_bits='auto'",
                                                     "pass quantization_bits=8 or None").quantization_bits
        return self._train_qbits

    def _training_split(self, needed_by, hint):
        """The model's training split, as its recipe names it, or a one-line ValueError saying who needed it."""
        from . import data as data_mod

        rec = self.meta["recipe"]["data"]
        try:
            return data_mod.open_split(rec["source"], rec["train_split"], rec.get("synthetic"))
        except (data_mod.DataError, OSError) as e:
            raise ValueError(f"{needed_by}: the model's training data {rec['source']} cannot be opened here "
                             f"({str(e).splitlines()[0]}); {hint}") from None
