"""Model files: safetensors weights with the recipe, data shape and results in the metadata.

Loading never unpickles: weights come from safetensors, everything else from JSON strings.
"""
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from .nn.build import build_model
from .recipe import RecipeError, recipe_from_dict

MODEL_FILE = "model.safetensors"


class CheckpointError(ValueError):
    pass


def save_model(path, model, meta):
    """Write weights + JSON metadata atomically (temporary name, fsync, rename)."""
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file(tensors, str(tmp), metadata={"dsmctl": json.dumps(meta)})
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def resolve_model_path(path):
    """A model file, a checkpoint directory, or a run directory (its exported or latest model)."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file or directory")
    for candidate in (path / MODEL_FILE, path / "checkpoints" / "latest"):
        if candidate.is_file() and candidate.name == MODEL_FILE:
            return candidate
        if candidate.is_file() and candidate.name == "latest":
            target = path / "checkpoints" / candidate.read_text().strip() / MODEL_FILE
            if target.is_file():
                return target
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


def load_model(path, device="cpu"):
    """(model in eval mode, metadata); refuses anything that is not a dsmctl safetensors file."""
    path = resolve_model_path(path)
    meta = read_meta(path)
    try:
        recipe = recipe_from_dict(meta["recipe"])
        model = build_model(recipe.model, meta["shape"])
        state = load_file(str(path))
        model.load_state_dict(state)
    except (KeyError, RecipeError, RuntimeError, SafetensorError) as e:
        raise CheckpointError(f"{path}: does not hold a loadable dsmctl model ({str(e).splitlines()[0][:160]})") from None
    return model.to(device).eval(), meta
