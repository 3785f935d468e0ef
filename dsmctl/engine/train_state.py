"""Run directories and training checkpoints (layout and guarantees: docs/training.md).

run_dir/
  recipe.yaml  command.txt  versions.json  metrics.jsonl  summary.json
  model.safetensors           exported model, EMA weights when EMA is on (metadata: weights, constant)
  model-raw.safetensors       raw weights, only when EMA is on
  checkpoints/step-0001000/   model.safetensors (raw), ema.safetensors (EMA on), state.pt, manifest.json
  checkpoints/latest          name of the newest complete checkpoint, moved last

A checkpoint is written into a hidden temporary directory, every file flushed to disk, its
manifest.json (sizes and sha256 of every file) written last, and the directory renamed into place;
only then does `latest` move, and only then are old checkpoints removed. A checkpoint is complete
when its manifest matches its files; resume never trusts anything else. state.pt holds tensors,
numbers and strings only and is read with torch.load(weights_only=True): never unpickled.
"""
import hashlib
import json
import os
import platform
import shutil
import sys
import time
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..nn.model_file import EMA_FILE, MODEL_FILE, CheckpointError, save_state
from ..fileio import WriteError, clean_stale_temporaries, disk_errors, fsync_dir, write_text

STATE_FILE = "state.pt"
MANIFEST = "manifest.json"
FORMAT = 1


def init_run_dir(run_dir, recipe, command):
    """Create (or reopen) a run directory: resolved recipe, command history, package versions."""
    run_dir = Path(run_dir)
    ckdir = run_dir / "checkpoints"
    with disk_errors(ckdir):
        ckdir.mkdir(parents=True, exist_ok=True)
    for stale in ckdir.glob(".step-*.tmp"):  # left by a run killed while saving
        shutil.rmtree(stale, ignore_errors=True)
    clean_stale_temporaries(run_dir)  # .model.safetensors.tmp-PID..., left by a kill during export
    clean_stale_temporaries(ckdir)  # .latest.tmp-PID, left by a kill while `latest` moved
    write_text(run_dir / "recipe.yaml", recipe.to_yaml())
    with disk_errors(run_dir / "command.txt"), open(run_dir / "command.txt", "a") as f:  # one line per run
        f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')}  {command or ' '.join(sys.argv)}\n")
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    from importlib.metadata import PackageNotFoundError, version

    for name in ("dsmctl", "torch", "accelerate", "numpy", "safetensors", "datasets", "typer", "rich"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    versions["cuda"] = torch.version.cuda
    write_text(run_dir / "versions.json", json.dumps(versions, indent=2) + "\n")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(run_dir, step, weights, ema_weights, state, meta, keep_last, keep_log, ckpt_every):
    """Write checkpoints/step-NNNNNNN atomically, move `latest`, apply retention; returns its path.

    A write that fails (full disk, read-only place; safetensors and torch.save report those as their own
    errors) removes the partial checkpoint and raises WriteError: the previous checkpoint and `latest` are
    untouched, so the run resumes from there once there is room."""
    ckdir = Path(run_dir) / "checkpoints"
    name = f"step-{step:07d}"
    tmp = ckdir / f".{name}.tmp"
    final = ckdir / name
    note = "(the previous checkpoint is intact)"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with disk_errors(final, note):
            tmp.mkdir(parents=True)
            save_state(tmp / MODEL_FILE, weights, {**meta, "step": step, "weights": "raw"})
            if ema_weights is not None:
                save_state(tmp / EMA_FILE, ema_weights, {**meta, "step": step, "weights": "ema", "ema": state["ema"]})
            with open(tmp / STATE_FILE, "wb") as f:
                torch.save({"format": FORMAT, **state, "step": step}, f)
                f.flush()
                os.fsync(f.fileno())
            files = {p.name: {"bytes": p.stat().st_size, "sha256": sha256(p)} for p in sorted(tmp.iterdir())}
            write_text(tmp / MANIFEST, json.dumps({"format": FORMAT, "step": step, "files": files}, indent=2) + "\n")
            fsync_dir(tmp)
    except WriteError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise WriteError(f"{e.reason} writing {final} {note}", e.reason) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():  # same step written again (e.g. resumed and stopped at once): replace it whole
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(ckdir)
    try:
        write_text(ckdir / "latest", name + "\n")
    except WriteError as e:  # no room even for the pointer: take the new checkpoint back out
        shutil.rmtree(final, ignore_errors=True)
        raise WriteError(f"{e.reason} writing {ckdir / 'latest'} {note}", e.reason) from None
    fsync_dir(ckdir)
    apply_retention(ckdir, keep_last, keep_log, ckpt_every)
    return final


def kept(steps, keep_last, keep_log, ckpt_every):
    """The steps to keep: the newest `keep_last`, plus (keep_log) those at ckpt_every * 2^k."""
    steps = sorted(steps)
    keep = set(steps[-keep_last:])
    if keep_log:
        keep |= {s for s in steps if s % ckpt_every == 0 and ((s // ckpt_every) & (s // ckpt_every - 1)) == 0}
    return keep


def apply_retention(ckdir, keep_last, keep_log, ckpt_every):
    dirs = {step_of(p): p for p in ckdir.glob("step-*") if p.is_dir() and step_of(p) is not None}
    for step in sorted(set(dirs) - kept(dirs, keep_last, keep_log, ckpt_every)):
        shutil.rmtree(dirs[step], ignore_errors=True)


def step_of(path):
    try:
        return int(Path(path).name.split("-", 1)[1])
    except (IndexError, ValueError):
        return None


def verify(ckpt):
    """Raise CheckpointError (one line) unless `ckpt` is a complete checkpoint directory."""
    ckpt = Path(ckpt)
    if ckpt.is_file():
        raise CheckpointError(f"{ckpt}: is a file; expected a checkpoint directory (run/checkpoints/step-NNNNNNN) "
                              f"or a run directory")
    if not (ckpt / MANIFEST).is_file():
        raise CheckpointError(f"{ckpt}: not a complete training checkpoint (no {MANIFEST}; "
                              f"expected {MODEL_FILE}, {STATE_FILE} and {MANIFEST})")
    where = ckpt / MANIFEST
    try:
        manifest = json.loads(where.read_text())
    except (OSError, ValueError, RecursionError):
        raise CheckpointError(f"{where}: unreadable manifest (not valid JSON)") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        raise CheckpointError(f"{where}: 'files' is {type(files).__name__}; expected an object "
                              f"{{file name: {{bytes, sha256}}}}")
    for required in (MODEL_FILE, STATE_FILE):
        if required not in files:
            raise CheckpointError(f"{where}: lists no {required}")
    for name, info in files.items():
        if not isinstance(name, str) or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
            raise CheckpointError(f"{where}: file name {name!r} is not a plain name in {ckpt}")
        if (not isinstance(info, dict) or not isinstance(info.get("bytes"), int) or isinstance(info["bytes"], bool)
                or not isinstance(info.get("sha256"), str)):
            raise CheckpointError(f"{where}: entry {name!r} is {json.dumps(info)[:60]}; expected "
                                  f"{{\"bytes\": integer, \"sha256\": hex string}}")
        path = ckpt / name
        if path.is_symlink() or not path.is_file():
            raise CheckpointError(f"{path}: missing or not a plain file (listed in {MANIFEST})")
        size = path.stat().st_size
        if size != info["bytes"]:
            raise CheckpointError(f"{path}: {size} bytes, expected {info['bytes']} (truncated or overwritten)")
        if sha256(path) != info["sha256"]:
            raise CheckpointError(f"{path}: sha256 mismatch (corrupted on disk)")
    return manifest


def candidates(run_dir):
    """Checkpoint directories of a run, newest first."""
    ckdir = Path(run_dir) / "checkpoints"
    dirs = [p for p in ckdir.glob("step-*") if p.is_dir() and step_of(p) is not None] if ckdir.is_dir() else []
    return sorted(dirs, key=step_of, reverse=True)


def find_resume(run_dir, resume):
    """(checkpoint path or None, warnings). auto: newest complete checkpoint, skipping damaged ones with a
    warning; never: None (refused if the run directory already has checkpoints); PATH: that checkpoint
    (or the newest complete one of that run directory), verified, no fallback."""
    if resume == "never":
        existing = candidates(run_dir)
        if existing:
            raise CheckpointError(f"{run_dir}: already has checkpoints (newest {existing[0].name}); with --resume "
                                  f"never use another --out, or resume with --resume auto")
        return None, []
    if resume == "auto":
        warnings = []
        for ckpt in candidates(run_dir):
            try:
                verify(ckpt)
                return ckpt, warnings
            except CheckpointError as e:
                warnings.append(f"[train] skipping damaged checkpoint: {e}")
        return None, warnings
    path = Path(resume)
    if path.is_dir() and not (path / MANIFEST).exists() and (path / "checkpoints").is_dir():
        found = candidates(path)
        if not found:
            raise CheckpointError(f"{path}: run directory without checkpoints")
        path = found[0]
    elif not path.exists():
        raise CheckpointError(f"--resume {resume}: no such checkpoint (expected auto, never or a checkpoint directory)")
    verify(path)
    return path, []


def load_checkpoint(ckpt):
    """{'weights', 'ema_weights' (or None), 'state'}; safetensors and weights_only loading only."""
    ckpt = Path(ckpt)
    try:
        weights = load_file(str(ckpt / MODEL_FILE))
        ema_weights = load_file(str(ckpt / EMA_FILE)) if (ckpt / EMA_FILE).is_file() else None
    except Exception as e:
        raise CheckpointError(f"{ckpt}: unreadable weights ({str(e).splitlines()[0][:160]})") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols before refusing
            state = torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as e:  # includes pickle.UnpicklingError for anything but plain tensors and numbers
        text = str(e)
        lines = text.splitlines() or [""]
        why = next((line.strip() for line in lines if "Unsupported" in line), lines[0])
        raise CheckpointError(f"{ckpt / STATE_FILE}: refused: not plain tensors and numbers, or damaged; "
                              f"nothing in it was run ({why[:160]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "optimizer" not in state:
        raise CheckpointError(f"{ckpt / STATE_FILE}: not a dsmctl training state (format {FORMAT})")
    return {"weights": weights, "ema_weights": ema_weights, "state": state}


def read_checkpoint_meta(ckpt):
    from ..nn.model_file import read_meta

    return read_meta(Path(ckpt) / MODEL_FILE)


def rewind_metrics(run_dir, step):
    """Drop metrics.jsonl lines past `step` (written by a run that was killed after its last checkpoint)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return 0
    keep, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            past = json.loads(line).get("step", 0) > step
        except ValueError:  # a half-written last line
            past = True
        if past:
            dropped += 1
        else:
            keep.append(line)
    if dropped:
        write_text(path, "".join(line + "\n" for line in keep))
    return dropped
