"""Saving and restoring the complete training state across processes (see train_state.py for the files).

Rank 0 picks and verifies the checkpoint and tells the others; every process loads it. Saving is a
collective: RNG states are gathered from every process, rank 0 writes, everyone waits.
"""
from pathlib import Path

from ..fileio import WriteError
from ..nn.model_file import CheckpointError, check_state, read_meta
from ..recipe import Recipe
from . import rng_state, train_state
from .errors import TrainError

# A resumed run must match its checkpoint on these (weights, data order and noise depend on them; the noise
# range and the loss define the objective, so changing them makes a different run, not a continued one);
# anything else (steps, learning rate, logging, EMA on/off, precision) may change, with a warning.
STRICT = ("model.", "data.", "noise.", "loss.", "train.batch_size", "train.seed")


def pick_checkpoint(acc, run_dir, resume):
    """(checkpoint path or None, warning lines), identical on every process."""
    result = [None, [], None]
    if acc.is_main_process:
        try:
            path, warnings = train_state.find_resume(run_dir, resume)
            result = [str(path) if path else None, warnings, None]
        except CheckpointError as e:
            result = [None, [], str(e)]
    if acc.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(result)
    if result[2]:
        raise CheckpointError(result[2])
    return (Path(result[0]) if result[0] else None), result[1]


def flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "synthetic":
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def compare_recipes(ckpt, saved, current):
    """Raise on changes that make the resumed run a different run; return the other changed keys.

    A key the checkpoint's recipe lacks (added to dsmctl after it was written) reads as its default: a run
    trained before `data.exclude_labels` existed trained on every class, which is what the default says."""
    a, b = {**flatten(Recipe().to_dict()), **flatten(saved)}, flatten(current)
    changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    strict = [k for k in changed if k.startswith(STRICT)]
    if strict:
        k = strict[0]
        raise CheckpointError(f"{ckpt}: trained with {k} = {a.get(k)!r}, the recipe now says {b.get(k)!r}; "
                              f"resume with the original recipe, or start a new run (--out elsewhere)")
    return changed


def load_state(acc, ckpt, model, optimizer, recipe, n_train):
    """Restore weights, optimizer and RNG into `model` / `optimizer` (before acc.prepare).

    Returns (start_step, state dict, checkpoint EMA weights or None, one-line description parts)."""
    meta = read_meta(Path(ckpt) / train_state.MODEL_FILE)
    changed = compare_recipes(ckpt, meta.get("recipe", {}), recipe.to_dict())
    loaded = train_state.load_checkpoint(ckpt)
    state = loaded["state"]
    check_state(Path(ckpt) / train_state.MODEL_FILE, loaded["weights"], model)
    if loaded["ema_weights"] is not None:
        check_state(Path(ckpt) / train_state.EMA_FILE, loaded["ema_weights"], model)
    try:
        model.load_state_dict(loaded["weights"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{ckpt}: does not fit this model/optimizer ({str(e).splitlines()[0][:160]})") from None
    step = int(state["step"])
    world, saved_world = acc.num_processes, int(state.get("world_size", 1))
    if saved_world == world and state.get("rng"):
        names = rng_state.restore(state["rng"], acc.process_index)
        rng = f"RNG ({', '.join(names)}; {world} process{'es' if world > 1 else ''})"
    else:
        rng_state.seed_all(recipe.train.seed + step, acc.process_index)
        rng = f"RNG not restored (saved by {saved_world} processes, now {world}; reseeded)"
    epoch, offset = divmod(step * recipe.train.batch_size, n_train)
    parts = [f"step {step}", f"weights, optimizer ({type(optimizer).__name__})", rng,
             f"data position epoch {epoch} + {offset}/{n_train}", f"world size {saved_world} -> {world}",
             f"{int(state.get('skipped', 0))} non-finite steps skipped so far"]
    if changed:
        parts.append(f"recipe changes: {', '.join(changed)}")
    return step, state, loaded["ema_weights"], parts


def restore_ema(ema, ema_weights, state):
    """Load the checkpoint's EMA into `ema` if both exist; returns the description part."""
    saved = state.get("ema")
    if ema is None:
        return "EMA off" + (" (the checkpoint's EMA is not used)" if ema_weights is not None else "")
    if ema_weights is None or not saved:
        return "EMA started from the restored weights (none in the checkpoint)"
    try:
        ema.load(ema_weights, saved["updates"])
    except KeyError as e:
        raise CheckpointError(f"unusable EMA weights in the checkpoint ({e})") from None
    if saved.get("decay") != ema.decay:
        return f"EMA ({ema.updates} updates; decay {saved.get('decay')} -> {ema.decay})"
    return f"EMA ({ema.updates} updates, decay {ema.decay})"


def save(acc, run_dir, step, model, optimizer, ema, skipped, window, recipe, meta):
    """Collective: every process calls it; rank 0 writes. Returns the checkpoint path.

    `window`: the metric sums since the last metrics line, so that a resumed run logs the same averages."""
    rng = rng_state.gather_all(acc)
    path = Path(run_dir) / "checkpoints" / f"step-{step:07d}"
    if acc.is_main_process:
        net = acc.unwrap_model(model)
        state = {"optimizer": optimizer.state_dict(), "rng": rng, "world_size": acc.num_processes,
                 "global_batch": recipe.train.batch_size, "skipped": skipped, "window": dict(window),
                 "ema": ema.info() if ema else None, "recipe_hash": recipe.hash()}
        t = recipe.train
        try:
            train_state.save_checkpoint(run_dir, step, net.state_dict(), ema.state_dict(net) if ema else None,
                                        state, meta, t.keep_last, t.keep_log, t.ckpt_every)
        except WriteError:
            raise
        except OSError as e:
            raise TrainError(f"{path}: could not write the checkpoint ({e})") from None
    acc.wait_for_everyone()
    return path
