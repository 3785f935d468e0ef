"""The non-finite guard in a real run: a NaN image in the training data makes the steps that draw it
non-finite; they are skipped and counted, and past train.max_nonfinite the run stops with exit code 3
and leaves its last checkpoint intact."""
import json
import sys

import numpy as np
import pytest

from dsmctl import cli
from dsmctl.engine import train_state as checkpoints
from dsmctl.engine.trainer import IndexSampler, train
from dsmctl.recipe import load_recipe

N, BATCH, SEED = 48, 8, 0
NAN_INDEX = int(IndexSampler(N, BATCH, SEED).positions(2)[0])  # first drawn at step 3 (1-based)


@pytest.fixture(scope="module")
def nan_data(tmp_path_factory):
    rng = np.random.default_rng(0)
    train_x = (0.5 + 0.2 * rng.standard_normal((N, 1, 16, 16))).astype(np.float32)
    train_x[NAN_INDEX] = np.finfo(np.float32).max  # finite (NaN data is refused) but its energy overflows
    path = tmp_path_factory.mktemp("nan") / "nan.npz"
    np.savez(path, train=train_x, test=(0.5 + 0.2 * rng.standard_normal((20, 1, 16, 16))).astype(np.float32))
    return path


def overrides(data, **more):
    base = {"data.source": str(data), "model.widths": "[8,16]", "model.mid_width": 16,
            "model.layers_per_block": 2, "model.embedding": "logt", "noise.t_min": 1e-4, "noise.t_max": 10,
            "train.batch_size": BATCH, "train.seed": SEED, "train.log_every": 2, "eval.t_max": 10,
            "eval.batch_size": 20, **more}
    return [f"{k}={v}" for k, v in base.items()]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_nonfinite_steps_are_skipped_named_and_counted(nan_data, tmp_path):
    out = tmp_path / "run"
    recipe = load_recipe(overrides=overrides(nan_data, **{"train.steps": 12, "train.ckpt_every": 6}))
    summary = train(recipe, out, progress=False)
    sampler = IndexSampler(N, BATCH, SEED)
    bad_steps = [s + 1 for s in range(12) if NAN_INDEX in sampler.positions(s)]
    assert len(bad_steps) == 2 and summary["skipped_steps"] == 2  # once per epoch of 6 steps
    events = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    skipped = [e for e in events if e.get("event") == "skipped"]
    assert [e["step"] for e in skipped] == bad_steps
    assert "space-score" in skipped[0]["reason"] and "t in [" in skipped[0]["reason"]
    assert all(np.isfinite(e["loss"]) for e in events if "loss" in e)
    assert np.isfinite(summary["normalization"]["constant"])  # the exported model is sound


def test_too_many_nonfinite_steps_stop_with_exit_3_and_last_checkpoint_intact(nan_data, tmp_path, monkeypatch,
                                                                           capsys):
    out = tmp_path / "run"
    sets = overrides(nan_data, **{"train.steps": 12, "train.ckpt_every": 1, "train.max_nonfinite": 0})
    monkeypatch.setattr(sys, "argv", ["dsmctl", "train", "--out", str(out), "-q",
                                      *[a for s in sets for a in ("--set", s)], str(nan_data.with_suffix(".yaml"))])
    nan_data.with_suffix(".yaml").write_text("{}\n")
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 3, err
    assert len(err.splitlines()) == 1 and "step 3: non-finite" in err and "max_nonfinite = 0" in err
    assert "step-0000002 is intact" in err
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-0000002"
    assert [p.name for p in checkpoints.candidates(out)][0] == "step-0000002"
    checkpoints.verify(out / "checkpoints" / "step-0000002")
    assert not (out / "model.safetensors").exists()
