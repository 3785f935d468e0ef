"""Model files: safetensors weights with the recipe, data shape and results in the metadata.

Loading never unpickles: weights come from safetensors, everything else from JSON strings.
"""
import json
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from ..fileio import atomic_path
from .build import build_model
from ..recipe import RecipeError, recipe_from_dict

MODEL_FILE = "model.safetensors"  # exported model (EMA weights when EMA is on); raw weights in a checkpoint
EMA_FILE = "ema.safetensors"  # EMA weights inside a training checkpoint
RAW_FILE = "model-raw.safetensors"  # raw weights next to an exported EMA model
WEIGHTS = ("auto", "ema", "raw")


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
        return resolve_model_path(path / "checkpoints" / latest.read_text().strip(), weights)
    else:  # a checkpoint directory, or a directory holding a model file
        names = {"auto": [EMA_FILE, MODEL_FILE], "ema": [EMA_FILE, MODEL_FILE], "raw": [MODEL_FILE]}[weights]
    for name in names:
        if (path / name).is_file():
            return path / name
    raise CheckpointError(f"{path}: no {MODEL_FILE} in it (expected a model file, a checkpoint or a run directory)")


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
        return json.loads(raw)
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: corrupt dsmctl metadata") from None


def load_model(path, device="cpu", weights="auto"):
    """(model in eval mode, metadata); refuses anything that is not a dsmctl safetensors file."""
    path = resolve_model_path(path, weights)
    meta = read_meta(path)
    have = meta.get("weights", "raw")
    if weights != "auto" and have != weights:
        raise CheckpointError(f"{path}: holds {have} weights, not {weights} (was EMA on in this run?)")
    try:
        recipe = recipe_from_dict(meta["recipe"])
        model = build_model(recipe.model, meta["shape"])
        state = load_file(str(path))
        model.load_state_dict(state)
    except (KeyError, RecipeError, RuntimeError, SafetensorError) as e:
        raise CheckpointError(f"{path}: does not hold a loadable dsmctl model ({str(e).splitlines()[0][:160]})") from None
    return model.to(device).eval(), meta
