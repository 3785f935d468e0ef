"""Checkpoints on disk: atomic layout, retention, damaged files, refused pickles, EMA export and eval-nll."""
import json
import pickle
import shutil
import sys
from pathlib import Path

import pytest
import torch

import reference
from dsmctl import cli
from dsmctl.nn.model_file import CheckpointError, load_model
from dsmctl.engine import train_state as checkpoints
from dsmctl.engine.ema import EMA
from dsmctl.engine.trainer import train
from dsmctl.nll.evaluate import eval_nll
from dsmctl.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.widths=[8,16]", "model.mid_width=16", "model.layers_per_block=2", "train.batch_size=8",
        "train.steps=15", "train.ckpt_every=5", "train.keep_last=3", "train.log_every=5", "eval.n_images=20",
        "eval.batch_size=20", "train.ema=0.9"]


def tiny_recipe(*more):
    return load_recipe(ROOT / "recipes" / "quickstart.yaml", TINY + list(more))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread: on a shared 2-core machine, two spinning threads per process cost far more than they give."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("ck") / "run"
    summary = train(tiny_recipe(), out, resume="auto", command="test", progress=False)
    return out, summary


def copy_run(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_run_directory_layout(finished_run):
    out, summary = finished_run
    for name in ("recipe.yaml", "command.txt", "versions.json", "metrics.jsonl", "summary.json",
                 "model.safetensors", "model-raw.safetensors"):
        assert (out / name).is_file(), name
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-0000015"
    ck = out / "checkpoints" / "step-0000015"
    assert sorted(p.name for p in ck.iterdir()) == ["ema.safetensors", "manifest.json", "model.safetensors", "state.pt"]
    state = torch.load(ck / "state.pt", weights_only=True)  # plain tensors and numbers
    assert state["step"] == 15 and state["world_size"] == 1 and state["ema"]["updates"] == 15
    assert {"torch", "numpy", "python"} <= set(state["rng"])
    assert not list((out / "checkpoints").glob(".*tmp"))
    assert json.loads((out / "versions.json").read_text())["torch"]
    assert summary["weights"] == "ema"


def test_retention_keeps_last_and_log_spaced():
    assert checkpoints.kept([5, 10, 15, 20, 25, 30, 35, 40, 45], 2, True, 5) == {5, 10, 20, 40, 45}
    assert checkpoints.kept([5, 10, 15, 20, 25], 2, False, 5) == {20, 25}
    assert checkpoints.kept([7, 10], 1, True, 5) == {10}  # off-grid steps (a stop signal) are never log keeps


def test_truncated_checkpoint_is_an_error_and_auto_falls_back(finished_run, tmp_path):
    out = copy_run(finished_run[0], tmp_path / "run")
    latest = out / "checkpoints" / "step-0000015"
    model_file = latest / "model.safetensors"
    with open(model_file, "r+b") as f:
        f.truncate(model_file.stat().st_size // 2)
    with pytest.raises(CheckpointError, match="truncated"):
        checkpoints.find_resume(out, str(latest))
    found, warnings = checkpoints.find_resume(out, "auto")
    assert found == out / "checkpoints" / "step-0000010"
    assert len(warnings) == 1 and "step-0000015" in warnings[0] and "\n" not in warnings[0]
    with pytest.raises(CheckpointError, match="step-0000015/model.safetensors"):
        load_model(model_file)  # eval-nll on the damaged file: a one-line error, not a traceback
    summary = train(tiny_recipe("train.steps=20"), out, resume="auto", command="test", progress=False)
    assert summary["steps"] == 20
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [5, 10, 15, 20]  # the old step-15 line was rewound


class Payload:
    """Unpickling this would create a file: proof that the loader ran code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def forge_state(ckpt, marker):
    """Replace state.pt by a malicious pickle and fix the manifest, as an attacker would."""
    with open(ckpt / "state.pt", "wb") as f:
        pickle.dump({"format": 1, "step": 15, "optimizer": Payload(marker)}, f, protocol=2)  # as torch.save
    manifest = json.loads((ckpt / "manifest.json").read_text())
    manifest["files"]["state.pt"] = {"bytes": (ckpt / "state.pt").stat().st_size,
                                     "sha256": checkpoints.sha256(ckpt / "state.pt")}
    (ckpt / "manifest.json").write_text(json.dumps(manifest))


def test_crafted_pickle_checkpoint_is_refused_and_runs_nothing(finished_run, tmp_path, monkeypatch, capsys):
    src = copy_run(finished_run[0], tmp_path / "src")
    ckpt = src / "checkpoints" / "step-0000015"
    marker = tmp_path / "pwned"
    forge_state(ckpt, marker)
    new_run = tmp_path / "new"
    monkeypatch.setattr(sys, "argv", ["dsmctl", "train", str(ROOT / "recipes" / "quickstart.yaml"),
                                      *[a for s in TINY for a in ("--set", s)], "--out", str(new_run),
                                      "--resume", str(ckpt)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    stderr = capsys.readouterr().err
    assert exit_info.value.code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "state.pt: refused" in lines[0], stderr
    assert "GLOBAL" in lines[0]  # the reason: a global (callable) that is not a tensor type
    assert not marker.exists() and not new_run.exists()  # nothing ran, nothing was written
    # The same file handed over directly, or as a model file: refused too.
    evil = tmp_path / "evil.pt"
    shutil.copy(ckpt / "state.pt", evil)
    with pytest.raises(CheckpointError, match="is a file"):
        checkpoints.find_resume(tmp_path, str(evil))
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_model(evil)
    with pytest.raises(CheckpointError, match="refused"):
        checkpoints.load_checkpoint(ckpt)
    assert not marker.exists()


def test_resume_never_refuses_to_overwrite_and_recipe_changes_are_checked(finished_run, tmp_path):
    out = copy_run(finished_run[0], tmp_path / "run")
    with pytest.raises(CheckpointError, match="already has checkpoints"):
        train(tiny_recipe(), out, resume="never", progress=False)
    with pytest.raises(CheckpointError, match="train.seed"):
        train(tiny_recipe("train.seed=5"), out, resume="auto", progress=False)
    # the objective is part of the run: a changed noise range or loss is refused, not silently continued
    for change, key in (("noise.t_min=1e-6", "noise.t_min"), ("loss.consistency_weight=0.5", "loss.consistency_weight")):
        before = sorted(p.name for p in (out / "checkpoints").iterdir())
        with pytest.raises(CheckpointError, match=key):
            train(tiny_recipe(change), out, resume="auto", progress=False)
        assert sorted(p.name for p in (out / "checkpoints").iterdir()) == before


def test_ema_warmup_and_export(finished_run):
    net = torch.nn.Linear(2, 1)
    ema = EMA(net, 0.999)
    assert ema.rate() == pytest.approx(0.1)  # first update: (1 + 0) / (10 + 0)
    for _ in range(8):
        ema.update(net)
    assert ema.rate() == pytest.approx(9 / 18)
    out, _ = finished_run
    res = eval_nll(out, n_images=20, baseline=False)
    assert res["weights"] == "ema" and "ema (decay 0.9, 15 updates) weights" in res["protocol"]
    raw = eval_nll(out, n_images=20, baseline=False, weights="raw")
    assert raw["weights"] == "raw" and raw["nll"]["bits_per_dim"] != res["nll"]["bits_per_dim"]
    ckpt = out / "checkpoints" / "step-0000015"
    assert eval_nll(ckpt, n_images=20, baseline=False)["weights"] == "ema"
    assert load_model(out)[1]["weights"] == "ema"


@pytest.mark.parametrize("weights", ["ema", "raw"])
def test_stored_constant_equals_a_recomputation_from_the_exported_weights(finished_run, weights):
    """Each exported file (EMA and raw) stores the constant of its own weights. Recomputed here as training's end
    does (gaussian anchor on the first 20 images of demo:test, tests/reference.py), it agrees to
    1e-4 nats per image (the constant's standard error is ~0.05; EMA and raw differ by ~0.006)."""
    out, _ = finished_run
    model, meta = load_model(out, weights=weights)
    norm = meta["normalization"]
    assert (norm["anchor"], norm["t_max"], norm["n_images"], norm["seed"], norm["data"]) == ("gaussian", 10.0, 20, 0,
                                                                                             "demo:test")
    c, se = reference.gaussian_anchor_constant(model, reference.images(20)[1], 10.0, seed=0)
    assert norm["constant"] == pytest.approx(c, abs=1e-4)
    assert norm["stderr"] == pytest.approx(se, rel=1e-3)
    other = load_model(out, weights="raw" if weights == "ema" else "ema")[1]["normalization"]["constant"]
    assert abs(other - norm["constant"]) > 1e-3  # 15 steps of EMA 0.9: different weights, different constant


def test_stored_constant_with_the_paper_anchor_equals_eval_nll_and_the_formula(tmp_path):
    """recipes/imagenet64.yaml stores a paper-anchor constant at the end of training: it equals eval-nll's
    --anchor paper recomputation on the same images and (d/2) log(2 pi e t_max) - mean U(y, t_max) written out."""
    out = tmp_path / "run"
    train(tiny_recipe("eval.anchor=paper", "train.steps=2", "train.ckpt_every=2", "model.base=none"), out,
          resume="never", progress=False)
    model, meta = load_model(out)
    norm = meta["normalization"]
    assert (norm["anchor"], norm["t_max"], norm["n_images"]) == ("paper", 10.0, 20)
    c, se = reference.paper_anchor_constant(model, reference.images(20)[1], 10.0, seed=0)
    assert norm["constant"] == pytest.approx(c, abs=1e-4) and norm["stderr"] == pytest.approx(se, rel=1e-3)
    again = eval_nll(out, n_images=20, anchor="paper", baseline=False)["nll"]
    assert again["anchor"] == "paper"
    assert again["constant"] == pytest.approx(norm["constant"], abs=1e-6)
    assert again["constant_stderr"] == pytest.approx(norm["stderr"], rel=1e-6)


def test_latest_is_confined_to_the_checkpoints_directory(tmp_path):
    """checkpoints/latest is data: a step-NNNNNNN name of a directory inside checkpoints/, never a path or a
    symlink out of it."""
    from dsmctl.nn.model_file import CheckpointError, latest_checkpoint

    ck = tmp_path / "run" / "checkpoints"
    (ck / "step-0000002").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (ck / "step-0000009").symlink_to(tmp_path / "elsewhere")
    (ck / "latest").write_text("step-0000002\n")
    assert latest_checkpoint(ck) == ck / "step-0000002"
    for text, why in (("step-0000009", "link out of"), ("../elsewhere", "expected the name"),
                      ("step-0000003", "not a checkpoint directory"), ("x" * 5000, "expected the name")):
        (ck / "latest").write_text(text + "\n")
        with pytest.raises(CheckpointError, match=why):
            latest_checkpoint(ck)


def test_a_key_added_after_the_checkpoint_reads_as_its_default():
    """A checkpoint written before a recipe key existed (its stored recipe lacks it) resumes when the recipe keeps
    the key's default, and is refused when the recipe sets it to something else."""
    from dsmctl.engine.resume import compare_recipes

    current = tiny_recipe().to_dict()
    saved = json.loads(json.dumps(current))
    del saved["data"]["exclude_labels"]
    assert compare_recipes("ckpt", saved, current) == []
    with pytest.raises(CheckpointError, match="data.exclude_labels"):
        compare_recipes("ckpt", saved, tiny_recipe("data.exclude_labels=[3]").to_dict())
