"""Run directories and training checkpoints.

run_dir/
  recipe.yaml  command.txt  versions.json  metrics.jsonl  summary.json
  model.safetensors                 the exported model (weights + metadata incl. normalization constant)
  checkpoints/step-0001000/         model.safetensors + state.pt (optimizer state, step: tensors and
                                    numbers only, loadable with weights_only=True)
  checkpoints/latest                name of the newest complete checkpoint, moved last
"""
import json
import os
import platform
import shutil
import sys
from pathlib import Path

import torch

from ..checkpoint import MODEL_FILE, CheckpointError, save_model
from safetensors.torch import load_file

STATE_FILE = "state.pt"


def init_run_dir(run_dir, recipe, command):
    run_dir = Path(run_dir)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run_dir / "recipe.yaml").write_text(recipe.to_yaml())
    (run_dir / "command.txt").write_text((command or " ".join(sys.argv)) + "\n")
    versions = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()}
    for name in ("dsmctl", "accelerate", "numpy", "safetensors"):
        try:
            from importlib.metadata import version

            versions[name] = version(name)
        except Exception:
            versions[name] = None
    (run_dir / "versions.json").write_text(json.dumps(versions, indent=2))


def save_checkpoint(run_dir, step, model, optimizer, meta, keep_last):
    ckdir = Path(run_dir) / "checkpoints"
    name = f"step-{step:07d}"
    tmp = ckdir / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(tmp / MODEL_FILE, model, {**meta, "step": step})
    torch.save({"step": step, "optimizer": optimizer.state_dict()}, tmp / STATE_FILE)
    final = ckdir / name
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    latest_tmp = ckdir / ".latest.tmp"
    latest_tmp.write_text(name + "\n")
    os.replace(latest_tmp, ckdir / "latest")
    for old in sorted(p for p in ckdir.glob("step-*") if p.is_dir())[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)


def find_resume(run_dir, resume):
    """'never' -> None; 'auto' -> the latest checkpoint if any; else a checkpoint path."""
    if resume == "never":
        return None
    if resume == "auto":
        latest = Path(run_dir) / "checkpoints" / "latest"
        if not latest.is_file():
            return None
        return Path(run_dir) / "checkpoints" / latest.read_text().strip()
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise CheckpointError(f"{path}: not a training checkpoint (expected {STATE_FILE} and {MODEL_FILE} in it)")
    return path


def load_training_state(ckpt, model, optimizer):
    ckpt = Path(ckpt)
    try:
        model.load_state_dict(load_file(str(ckpt / MODEL_FILE)))
        state = torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{ckpt}: unreadable checkpoint ({str(e).splitlines()[0][:160]})") from None
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"])
