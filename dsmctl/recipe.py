"""Recipes: YAML -> frozen dataclasses, strict keys (with did-you-mean), typed --set overrides, a hash.

Every mistake is a RecipeError whose one-line message names the file, the dotted key and what was expected.
YAML from outside is data, never trusted structure: read_yaml bounds alias expansion and nesting depth, refuses
duplicate keys, and allows only plain values (mappings, lists, strings, numbers, booleans, null).
"""
import dataclasses
import difflib
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml


from .units import T_LIMIT
from .recipe_yaml import FLOAT_LIMIT, INT_LIMIT, MAX_RECIPE_BYTES, RecipeError, read_yaml, show  # noqa: F401


@dataclass(frozen=True)
class Data:
    source: str = "demo"  # prepared dir, "demo", "synthetic", or anything `dsmctl prepare` accepts
    train_split: str = "train"
    eval_split: str = "test"
    hflip: bool = False  # random horizontal flips (the paper's ImageNet64 augmentation)
    # Not in the paper: uniform noise inside each 8-bit bin, (u - 1/2)/256, added to every training image, fresh
    # each step from (train.seed, step) (Theis et al. 2016); the model then learns a density of the dequantized data.
    dequantize: bool = False
    subset: str | None = None  # "first:N", "last:N", "random:N:SEED:a|b" (disjoint halves a/b)
    exclude_labels: tuple[int, ...] = ()  # drop these classes from the train and eval splits (leave-one-class-out)
    synthetic: dict | None = None  # for source "synthetic": {kind: gsm|gaussian, d, n_train, n_test, seed, ...}


@dataclass(frozen=True)
class Model:
    kind: str = "energy"  # energy | denoiser | radial
    widths: tuple[int, ...] = (64, 128, 256)
    mid_width: int = 512
    layers_per_block: int = 3
    embedding: str = "paper"  # paper (raw t, as published) | logt
    base: str = "none"  # none (the paper) | gaussian: add the energy of a Gaussian fitted to the training data
    time_offset: str = "none"  # none (the paper) | learned: add a learned y-independent g(t) (nn/energy.TimeOffset)
    radial_components: int = 2
    radial_hidden: int = 256
    radial_depth: int = 4


@dataclass(frozen=True)
class Noise:
    t_min: float = 1e-9
    t_max: float = 1e3


@dataclass(frozen=True)
class Loss:
    mode: str = "dual"  # dual | single
    time_weight: float = 1.0
    # Not in the paper: weight of the heat-equation consistency penalty (objectives.consistency_term); 0 = off.
    consistency_weight: float = 0.0


@dataclass(frozen=True)
class Optim:
    lr: float = 5e-4
    schedule: str = "halving"  # halving (every halve_every steps) | onecycle | cosine | constant
    halve_every: int = 100_000
    warmup_steps: int = 0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float | None = None


@dataclass(frozen=True)
class Train:
    steps: int = 1_000_000
    batch_size: int = 128  # global batch, split evenly across processes
    seed: int = 0
    log_every: int = 100
    ckpt_every: int = 10_000
    keep_last: int = 3
    keep_log: bool = True  # also keep the checkpoints at ckpt_every * 2^k (log-spaced)
    ema: float | None = None  # EMA decay, e.g. 0.999; None = off (the paper)
    precision: str = "fp32"  # fp32 (IEEE, TF32 off: the paper) | tf32 | bf16 (autocast, fp32 energy parts)
    max_nonfinite: int = 20  # skipped non-finite steps allowed over the run before stopping (exit code 3)
    progress_every_s: float = 30.0  # one plain progress line at most this often when stderr is not a TTY
    tensorboard: bool = False  # also log metrics to run_dir/tensorboard through Accelerate's tracker


@dataclass(frozen=True)
class Eval:
    t: float = 0.0
    t_max: float = 1e3  # where the constant is fixed
    anchor: str = "paper"  # paper | gaussian
    # Not in the paper: the noise level of the density p_t whose bin integrals give eval-nll's bound on 8-bit data
    # (every normalized p_t is a density); 0 = p_0. Chosen on held-out training images, never on the test set.
    bound_t: float = 0.0
    batch_size: int = 256
    n_images: int | None = None  # None = the whole evaluation split
    seed: int = 0


@dataclass(frozen=True)
class Recipe:
    data: Data = field(default_factory=Data)
    model: Model = field(default_factory=Model)
    noise: Noise = field(default_factory=Noise)
    loss: Loss = field(default_factory=Loss)
    optim: Optim = field(default_factory=Optim)
    train: Train = field(default_factory=Train)
    eval: Eval = field(default_factory=Eval)

    def to_dict(self):
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def to_yaml(self):
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def hash(self):
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


CHOICES = {
    "model.kind": ("energy", "denoiser", "radial"),
    "model.embedding": ("paper", "logt"),
    "model.base": ("none", "gaussian"),
    "model.time_offset": ("none", "learned"),
    "loss.mode": ("dual", "single"),
    "optim.schedule": ("halving", "onecycle", "cosine", "constant"),
    "train.precision": ("fp32", "tf32", "bf16"),
    "eval.anchor": ("paper", "gaussian"),
}


def _check_values(r, where):
    def need(ok, key, expected, value):
        if not ok:
            raise RecipeError(f"{where}{key}: expected {expected}, got {show(value)}")

    for sec in dataclasses.fields(r):
        for f in dataclasses.fields(getattr(r, sec.name)):
            value = getattr(getattr(r, sec.name), f.name)
            values = value if isinstance(value, tuple) else (value,)
            need(all(not isinstance(v, float) or math.isfinite(v) for v in values), f"{sec.name}.{f.name}",
                 "a finite number", value)
            need(all(not isinstance(v, float) or abs(v) <= FLOAT_LIMIT for v in values), f"{sec.name}.{f.name}",
                 f"a number of magnitude at most {FLOAT_LIMIT:g}", value)
            need(all(not isinstance(v, int) or isinstance(v, bool) or -INT_LIMIT <= v < INT_LIMIT for v in values),
                 f"{sec.name}.{f.name}", "an integer of magnitude below 2^63", value)
    for key, allowed in CHOICES.items():
        sec, name = key.split(".")
        value = getattr(getattr(r, sec), name)
        need(value in allowed, key, "one of " + ", ".join(allowed), value)
    need(r.noise.t_min > 0, "noise.t_min", "a positive noise variance", r.noise.t_min)
    need(r.noise.t_max <= T_LIMIT, "noise.t_max", f"a noise variance of at most {T_LIMIT:g}", r.noise.t_max)
    need(r.eval.t <= T_LIMIT, "eval.t", f"a noise variance of at most {T_LIMIT:g}", r.eval.t)
    need(r.eval.t_max <= T_LIMIT, "eval.t_max", f"a noise variance of at most {T_LIMIT:g}", r.eval.t_max)
    need(r.noise.t_max > r.noise.t_min, "noise.t_max", f"a value above noise.t_min ({r.noise.t_min})", r.noise.t_max)
    need(r.loss.time_weight >= 0, "loss.time_weight", "a non-negative weight", r.loss.time_weight)
    need(r.loss.consistency_weight >= 0, "loss.consistency_weight", "a non-negative weight", r.loss.consistency_weight)
    need(r.loss.consistency_weight == 0 or r.model.kind != "denoiser", "loss.consistency_weight",
         "0 for model.kind denoiser (the penalty needs the time derivative of an energy)", r.loss.consistency_weight)
    need(r.loss.consistency_weight == 0 or r.train.batch_size % 2 == 0, "train.batch_size",
         "an even batch size with loss.consistency_weight > 0 (images come in pairs)", r.train.batch_size)
    need(r.optim.lr > 0, "optim.lr", "a positive learning rate", r.optim.lr)
    need(r.optim.halve_every > 0, "optim.halve_every", "a positive number of steps", r.optim.halve_every)
    need(r.optim.warmup_steps >= 0, "optim.warmup_steps", "a non-negative number of steps", r.optim.warmup_steps)
    need(len(r.optim.betas) == 2 and all(0 <= b < 1 for b in r.optim.betas), "optim.betas", "two numbers in [0, 1)", list(r.optim.betas))
    need(r.optim.eps > 0, "optim.eps", "a positive number", r.optim.eps)
    need(r.optim.weight_decay >= 0, "optim.weight_decay", "a non-negative number", r.optim.weight_decay)
    need(r.optim.grad_clip is None or r.optim.grad_clip > 0, "optim.grad_clip", "null or a positive norm", r.optim.grad_clip)
    need(r.train.steps > 0, "train.steps", "a positive number of steps", r.train.steps)
    need(r.train.batch_size > 0, "train.batch_size", "a positive batch size", r.train.batch_size)
    need(r.train.log_every > 0, "train.log_every", "a positive number of steps", r.train.log_every)
    need(r.train.ckpt_every > 0, "train.ckpt_every", "a positive number of steps", r.train.ckpt_every)
    need(r.train.keep_last >= 1, "train.keep_last", "at least 1", r.train.keep_last)
    need(r.train.max_nonfinite >= 0, "train.max_nonfinite", "a non-negative count", r.train.max_nonfinite)
    need(r.train.progress_every_s > 0, "train.progress_every_s", "a positive number of seconds", r.train.progress_every_s)
    need(r.train.ema is None or 0 < r.train.ema < 1, "train.ema", "null or a decay in (0, 1)", r.train.ema)
    need(len(r.model.widths) >= 1 and all(w > 0 for w in r.model.widths), "model.widths", "a list of positive widths", list(r.model.widths))
    need(r.model.mid_width > 0, "model.mid_width", "a positive width", r.model.mid_width)
    need(r.model.layers_per_block >= 2, "model.layers_per_block", "at least 2", r.model.layers_per_block)
    need(r.eval.t >= 0, "eval.t", "a non-negative noise variance", r.eval.t)
    need(r.eval.t_max > 0, "eval.t_max", "a positive noise variance", r.eval.t_max)
    need(r.eval.bound_t >= 0, "eval.bound_t", "a non-negative noise variance", r.eval.bound_t)
    need(r.eval.batch_size > 0, "eval.batch_size", "a positive batch size", r.eval.batch_size)
    need(r.eval.n_images is None or r.eval.n_images > 0, "eval.n_images", "null or a positive count", r.eval.n_images)
    need(r.model.radial_components >= 1, "model.radial_components", "at least 1", r.model.radial_components)
    need(r.model.radial_hidden >= 1, "model.radial_hidden", "at least 1", r.model.radial_hidden)
    need(r.model.radial_depth >= 0, "model.radial_depth", "a non-negative number of layers", r.model.radial_depth)
    need(r.model.kind == "energy" or r.model.base == "none", "model.base",
         f"none for model.kind {r.model.kind} (the Gaussian base is added to an energy UNet)", r.model.base)
    need(r.model.kind == "energy" or r.model.time_offset == "none", "model.time_offset",
         f"none for model.kind {r.model.kind} (the learned g(t) is added to an energy UNet)", r.model.time_offset)
    need(r.model.time_offset == "none" or r.loss.mode == "dual", "model.time_offset",
         "none with loss.mode single (only the time term trains g(t))", r.model.time_offset)
    need(r.model.kind != "denoiser" or r.loss.mode == "single", "loss.mode",
         "single for model.kind denoiser (a score network has no time derivative to train)", r.loss.mode)
    need(r.optim.schedule != "onecycle" or r.optim.warmup_steps == 0, "optim.warmup_steps",
         "0 with optim.schedule onecycle (its warm-up is built in)", r.optim.warmup_steps)
    need(r.data.subset is None or re.fullmatch(r"(first|last):[1-9][0-9]*|random:[1-9][0-9]*:[0-9]+:[ab]", r.data.subset),
         "data.subset", "null, first:N, last:N or random:N:SEED:a|b", r.data.subset)
    need(all(v >= 0 for v in r.data.exclude_labels) and len(set(r.data.exclude_labels)) == len(r.data.exclude_labels),
         "data.exclude_labels", "a list of distinct class numbers >= 0", list(r.data.exclude_labels))
    need(r.data.source != "synthetic" or isinstance(r.data.synthetic, dict), "data.synthetic",
         "a mapping {kind, d, n_train, ...} when data.source is synthetic", r.data.synthetic)


def _coerce(value, tp, key, where):
    """Check `value` against the annotation `tp`; ints are accepted as floats, lists as tuples."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key, where)
            except RecipeError as e:
                errors.append(e)
        raise errors[0]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{where}{key}: expected a list, got {show(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key, where) for v in value)
        if len(value) != len(args):
            raise RecipeError(f"{where}{key}: expected a list of {len(args)} values, got {show(value)}")
        return tuple(_coerce(v, a, key, where) for v, a in zip(value, args))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise RecipeError(f"{where}{key}: expected true or false, got {show(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise RecipeError(f"{where}{key}: expected an integer, got {show(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads "1e-9" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise RecipeError(f"{where}{key}: expected a number, got {show(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise RecipeError(f"{where}{key}: expected a string, got {show(value)}")
    if origin is dict or tp is dict:
        if isinstance(value, dict):
            return value
        raise RecipeError(f"{where}{key}: expected a mapping, got {show(value)}")
    raise TypeError(f"unsupported annotation {tp} for {key}")


def _unknown(key, known, where):
    close = difflib.get_close_matches(key.split(".")[-1], known, n=1)
    prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
    hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; expected one of: {', '.join(known)}"
    return RecipeError(f"{where}{key}: unknown key{hint}")


def _build(cls, raw, prefix, where):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RecipeError(f"{where}{prefix.rstrip('.') or 'recipe'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            raise _unknown(f"{prefix}{key}", names, where)
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, f"{prefix}{key}.", where)
        else:
            kwargs[key] = _coerce(value, tp, f"{prefix}{key}", where)
    return cls(**kwargs)


def parse_override(text):
    """'optim.lr=1e-4' -> ('optim.lr', 1e-4); the value is read as YAML (numbers, lists, null, true)."""
    if "=" not in text:
        raise RecipeError(f"--set {show(text)}: expected KEY=VALUE, e.g. optim.lr=1e-4")
    key, value = text.split("=", 1)
    return key.strip(), read_yaml(value, f"--set {show(text)}: ")


def apply_overrides(raw, overrides):
    raw = json.loads(json.dumps(raw or {}))
    sections = [f.name for f in dataclasses.fields(Recipe)]
    for text in overrides:
        key, value = parse_override(text)
        parts = key.split(".")
        if len(parts) < 2:
            raise RecipeError(f"--set {key}: expected a dotted key SECTION.NAME (sections: {', '.join(sections)})")
        node = raw
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise RecipeError(f"--set {key}: '{p}' is not a section")
        node[parts[-1]] = value
    return raw


def load_recipe(path=None, overrides=(), raw=None):
    """Read a recipe file (or a dict), apply --set overrides, validate; raises RecipeError."""
    where = f"{path}: " if path else ""
    if raw is None and path is not None:
        p = Path(path)
        if p.is_dir():
            raise RecipeError(f"{path}: is a directory; expected a recipe file (YAML)")
        if not p.exists():
            raise RecipeError(f"{path}: no such recipe file")
        if not p.is_file():  # a FIFO, a device (/dev/zero), a socket: never read (it may not end)
            raise RecipeError(f"{path}: not a regular file; expected a recipe file (YAML)")
        if p.stat().st_size > MAX_RECIPE_BYTES:
            raise RecipeError(f"{path}: {p.stat().st_size:,} bytes; expected a recipe file of at most "
                              f"{MAX_RECIPE_BYTES:,} bytes")
        raw_bytes = p.read_bytes()
        try:
            text = raw_bytes.decode("utf-8")
        except UnicodeDecodeError as e:
            raise RecipeError(f"{path}: not UTF-8 text (byte 0x{raw_bytes[e.start]:02x} at offset {e.start}); "
                              "save the recipe as UTF-8") from None
        raw = read_yaml(text, where)
    if raw is not None and not isinstance(raw, dict):
        raise RecipeError(f"{where}expected a mapping of sections (data, model, noise, loss, optim, train, eval)")
    raw = apply_overrides(raw, overrides)
    recipe = _build(Recipe, raw, "", where)
    _check_values(recipe, where)
    return recipe


def recipe_from_dict(d):
    """Rebuild a recipe stored in a checkpoint or run directory."""
    return load_recipe(raw=d)
