"""Model files: safetensors weights with the recipe, data shape and results in the metadata.

Loading never unpickles: weights come from safetensors, everything else from JSON strings.
"""
import json
import math
import re
from pathlib import Path

import torch

from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from ..budget import need_memory
from ..fileio import atomic_path
from .build import ShapeError, build_model, check_shape
from .size import model_size
from ..recipe import RecipeError, recipe_from_dict
from ..recipe_yaml import show

MODEL_FILE = "model.safetensors"  # exported model (EMA weights when EMA is on); raw weights in a checkpoint
EMA_FILE = "ema.safetensors"  # EMA weights inside a training checkpoint
RAW_FILE = "model-raw.safetensors"  # raw weights next to an exported EMA model
WEIGHTS = ("auto", "ema", "raw")
ANCHORS = ("paper", "gaussian")
CHECKPOINT_NAME = re.compile(r"^step-\d{1,12}$")  # what checkpoints/latest may hold
MAX_EXAMPLE_VALUES = 1 << 30  # one example of a stored `shape` may hold at most this many values


class CheckpointError(ValueError):
    pass


def save_model(path, model, meta):
    """Write weights + JSON metadata atomically (temporary name, fsync, rename)."""
    save_state(path, model.state_dict(), meta)


def save_state(path, state, meta):
    """Like save_model, from a state dict."""
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"dsmctl": json.dumps(meta)})


def resolve_model_path(path, weights="auto"):
    """A model file, a checkpoint directory, or a run directory (its exported or latest model).

    weights: "auto" takes the EMA weights where a directory has them (a run directory's exported
    model.safetensors already holds them when EMA was on), "ema" insists on them, "raw" avoids them.
    """
    if weights not in WEIGHTS:
        raise CheckpointError(f"--weights {weights!r}: expected one of {', '.join(WEIGHTS)}")
    path = Path(path)
    if path.is_file():
        return path
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file or directory")
    latest = path / "checkpoints" / "latest"
    if (path / MODEL_FILE).is_file() and (path / "checkpoints").is_dir():  # a finished run directory
        names = {"auto": [MODEL_FILE], "ema": [MODEL_FILE], "raw": [RAW_FILE, MODEL_FILE]}[weights]
    elif latest.is_file():  # a run directory still training: its latest checkpoint
        return resolve_model_path(latest_checkpoint(path / "checkpoints"), weights)
    else:  # a checkpoint directory, or a directory holding a model file
        names = {"auto": [EMA_FILE, MODEL_FILE], "ema": [EMA_FILE, MODEL_FILE], "raw": [MODEL_FILE]}[weights]
    for name in names:
        if (path / name).is_file():
            return path / name
    raise CheckpointError(f"{path}: no {MODEL_FILE} in it (expected a model file, a checkpoint or a run directory)")


def latest_checkpoint(ckdir):
    """The checkpoint directory named by `ckdir/latest`: a plain step-NNNNNNN name inside `ckdir`, never a
    path elsewhere (no "..", no absolute path, no symlink out of the directory)."""
    ckdir = Path(ckdir)
    pointer = ckdir / "latest"
    try:
        with open(pointer, "rb") as f:
            raw = f.read(256)
        name = raw.decode("utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{pointer}: unreadable ({e.__class__.__name__}); expected the name of a checkpoint "
                              f"(step-NNNNNNN)") from None
    if not CHECKPOINT_NAME.match(name):
        shown = name if len(name) <= 60 else name[:60] + "..."
        raise CheckpointError(f"{pointer}: holds {shown!r}; expected the name of a checkpoint in {ckdir} "
                              f"(step-NNNNNNN)")
    target = ckdir / name
    if not target.is_dir():
        raise CheckpointError(f"{pointer}: names {name}, which is not a checkpoint directory in {ckdir}")
    if target.resolve().parent != ckdir.resolve():
        raise CheckpointError(f"{pointer}: {name} is a link out of {ckdir}; expected a checkpoint directory in it")
    return target


def _field_error(path, field, value, expected):
    shown = json.dumps(value) if not isinstance(value, str) else repr(value)
    shown = shown if len(shown) <= 60 else shown[:60] + "..."
    return CheckpointError(f"{path}: metadata field '{field}' is {shown}; expected {expected}")


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_meta(path, meta):
    """Type-check dsmctl metadata read from a file (it is data from outside: never trusted as structure)."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: dsmctl metadata is a JSON {type(meta).__name__}, expected a JSON object "
                              f"(not written by dsmctl, or damaged)")
    if not isinstance(meta.get("recipe"), dict):
        raise _field_error(path, "recipe", meta.get("recipe"), "an object (the training recipe)")
    shape = meta.get("shape")
    if (not isinstance(shape, list) or not 1 <= len(shape) <= 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)):
        raise _field_error(path, "shape", shape, "1 to 3 positive integers (C, H, W or D)")
    if math.prod(shape) > MAX_EXAMPLE_VALUES:
        raise _field_error(path, "shape", shape, f"at most {MAX_EXAMPLE_VALUES:,} values per example")
    if meta.get("weights", "raw") not in ("raw", "ema"):
        raise _field_error(path, "weights", meta.get("weights"), "raw or ema")
    step = meta.get("step")
    if step is not None and (not isinstance(step, int) or isinstance(step, bool) or step < 0):
        raise _field_error(path, "step", step, "a non-negative integer")
    for key in ("ema", "data"):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            raise _field_error(path, key, meta[key], "an object")
    norm = meta.get("normalization")
    if norm is not None:
        if not isinstance(norm, dict):
            raise _field_error(path, "normalization", norm, "an object {constant, stderr, t_max, anchor}")
        for key, ok, expected in (
                ("constant", lambda v: _is_number(v) and math.isfinite(v), "a finite number"),
                ("stderr", lambda v: _is_number(v) and (math.isnan(v) or v >= 0), "a number >= 0"),
                ("t_max", lambda v: _is_number(v) and math.isfinite(v) and v > 0, "a positive finite number"),
                ("anchor", lambda v: v in ANCHORS, " or ".join(ANCHORS))):
            if key not in norm or not ok(norm[key]):
                raise _field_error(path, f"normalization.{key}", norm.get(key), expected)
    return meta


def read_meta(path):
    path = resolve_model_path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("dsmctl")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors model file ({str(e).splitlines()[0][:120]})") from None
    if raw is None:
        raise CheckpointError(f"{path}: safetensors file without dsmctl metadata (not written by dsmctl)")
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        raise CheckpointError(f"{path}: corrupt dsmctl metadata (not valid JSON)") from None
    return check_meta(path, meta)


def _dtype_name(dtype):
    return str(dtype).removeprefix("torch.")


def check_state(path, state, model):
    """Refuse weights that do not fit `model` exactly, naming the tensor: missing or unexpected names, another
    dtype (float64 for a floating tensor is the one exception), another shape, NaN or inf values (also after
    reading float64 at the model's precision)."""
    want = model.state_dict()
    missing = [k for k in want if k not in state]
    if missing:
        raise CheckpointError(f"{path}: tensor {missing[0]} is missing ({len(missing)} missing); expected the "
                              f"weights of the model its metadata describes")
    extra = [k for k in state if k not in want]
    if extra:
        raise CheckpointError(f"{path}: unexpected tensor {extra[0]} ({len(extra)} unexpected); expected the "
                              f"weights of the model its metadata describes")
    for name, ref in want.items():
        t = state[name]
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"{path}: {name} is not a tensor")
        # The model's own dtype, or float64 for a floating tensor (a model saved in double precision, read at the
        # model's precision); never integers, bools or narrower floats cast silently.
        if t.dtype != ref.dtype and not (ref.is_floating_point() and t.dtype == torch.float64):
            raise CheckpointError(f"{path}: tensor {name} is {_dtype_name(t.dtype)}, expected "
                                  f"{_dtype_name(ref.dtype)} (nothing else is converted silently)")
        if tuple(t.shape) != tuple(ref.shape):
            raise CheckpointError(f"{path}: tensor {name} has shape {list(t.shape)}, expected {list(ref.shape)}")
        if t.is_floating_point() and not torch.isfinite(t.to(ref.dtype)).all():
            bad = int((~torch.isfinite(t.to(ref.dtype))).sum())
            raise CheckpointError(f"{path}: tensor {name} has {bad} non-finite values (NaN or inf); expected "
                                  f"finite weights")


def check_model_size(path, recipe, shape):
    """Refuse, before anything is built, a model that the metadata describes but the file cannot hold (each
    weight takes at least 4 bytes) or this machine cannot: the same memory budget as a recipe's (budget.py)."""
    try:
        check_shape(recipe.model, shape)
    except ShapeError as e:
        raise CheckpointError(f"{path}: metadata fields 'recipe' and 'shape' do not describe a model "
                              f"({str(e).splitlines()[0][:160]})") from None
    params, _ = model_size(recipe.model, shape)
    m = recipe.model
    key = (f"model.radial_hidden {m.radial_hidden}" if m.kind == "radial" else
           f"model.widths {show(list(m.widths))} (model.mid_width {m.mid_width})")
    have = Path(path).stat().st_size
    if params * 4 > have:
        raise CheckpointError(f"{path}: metadata field 'recipe' ({key}) describes {params:,} weights, at least "
                              f"{params * 4:,} bytes, but the file holds {have:,} bytes; expected the metadata of "
                              f"the weights in the file")
    need_memory(params * 4 * 2, f"{path}: metadata field 'recipe' ({key})", None,
                f"for {params:.3g} weights (the model and the weights read from the file)")


def load_model(path, device="cpu", weights="auto"):
    """(model in eval mode, metadata); refuses anything that is not a dsmctl safetensors file whose metadata
    and weights fit together (types, dtypes, shapes, finite values: each named where it fails)."""
    path = resolve_model_path(path, weights)
    meta = read_meta(path)
    have = meta.get("weights", "raw")
    if weights != "auto" and have != weights:
        raise CheckpointError(f"{path}: holds {have} weights, not {weights} (was EMA on in this run?)")
    try:
        recipe = recipe_from_dict(meta["recipe"])
    except (RecipeError, TypeError, ValueError, KeyError, AttributeError) as e:
        raise CheckpointError(f"{path}: metadata field 'recipe' is not a valid recipe "
                              f"({str(e).splitlines()[0][:160] if str(e) else type(e).__name__})") from None
    check_model_size(path, recipe, meta["shape"])
    try:
        model = build_model(recipe.model, meta["shape"])
    except ValueError as e:
        raise CheckpointError(f"{path}: metadata fields 'recipe' and 'shape' do not describe a model "
                              f"({str(e).splitlines()[0][:160]})") from None
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable weights ({str(e).splitlines()[0][:160]})") from None
    check_state(path, state, model)
    model.load_state_dict(state)
    for part in model.modules():  # parts that can say their values make no density (a Gaussian base)
        problem = part.problem() if hasattr(part, "problem") else None
        if problem:
            raise CheckpointError(f"{path}: {problem}")
    meta = {**meta, "recipe": recipe.to_dict()}  # every key present, as the recipe code defines them
    return model.to(device).eval(), meta
