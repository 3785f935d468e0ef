"""Malformed recipes and overrides: each gives exit code 2 and one line on stderr naming the key."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dsmctl import cli
from dsmctl.engine.errors import TrainError
from dsmctl.engine.trainer import train
from dsmctl.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]

# (recipe text, extra CLI arguments, text the one-line error must contain)
CASES = {
    "unknown section": ("optimm: {lr: 1.0e-3}\n", [], "optimm: unknown key; did you mean 'optim'?"),
    "unknown key": ("optim: {lrr: 1.0e-3}\n", [], "optim.lrr: unknown key; did you mean 'optim.lr'?"),
    "misspelt key": ("train: {batchsize: 8}\n", [], "did you mean 'train.batch_size'?"),
    "text for integer": ("train: {steps: many}\n", [], "train.steps: expected an integer, got 'many'"),
    "fraction for integer": ("train: {batch_size: 8.5}\n", [], "train.batch_size: expected an integer"),
    "bool for integer": ("train: {steps: true}\n", [], "train.steps: expected an integer"),
    "negative lr": ("optim: {lr: -1.0e-3}\n", [], "optim.lr: expected a positive learning rate"),
    "nan lr": ("optim: {lr: .nan}\n", [], "optim.lr: expected a finite number"),
    "t_min above t_max": ("noise: {t_min: 10, t_max: 1}\n", [], "noise.t_max: expected a value above noise.t_min"),
    "zero t_min": ("noise: {t_min: 0}\n", [], "noise.t_min: expected a positive noise variance"),
    "unknown loss mode": ("loss: {mode: triple}\n", [], "loss.mode: expected one of dual, single"),
    "unknown precision": ("train: {precision: fp16}\n", [], "train.precision: expected one of fp32, tf32, bf16"),
    "ema decay of 1.5": ("train: {ema: 1.5}\n", [], "train.ema: expected null or a decay in (0, 1)"),
    "keep_last 0": ("train: {keep_last: 0}\n", [], "train.keep_last: expected at least 1"),
    "scalar for list": ("model: {widths: 64}\n", [], "model.widths: expected a list"),
    "one beta": ("optim: {betas: [0.9]}\n", [], "optim.betas: expected a list of 2 values"),
    "negative clip": ("optim: {grad_clip: -1}\n", [], "optim.grad_clip: expected null or a positive norm"),
    "negative max_nonfinite": ("train: {max_nonfinite: -1}\n", [], "train.max_nonfinite"),
    "denoiser with the dual loss": ("model: {kind: denoiser}\n", [], "loss.mode: expected single for model.kind denoiser"),
    "gaussian base on a radial model": ("model: {kind: radial, base: gaussian}\n", [], "model.base: expected none for model.kind radial"),
    "warm-up with onecycle": ("optim: {schedule: onecycle, warmup_steps: 10}\n", [], "optim.warmup_steps: expected 0"),
    "zero radial components": ("model: {kind: radial, radial_components: 0}\n", [], "model.radial_components"),
    "malformed subset": ("data: {subset: 'foo'}\n", [], "data.subset: expected null, first:N, last:N or random:N:SEED:a|b"),
    "section not a mapping": ("train: 5\n", [], "train: expected a mapping"),
    "list at top level": ("- a\n- b\n", [], "expected a mapping of sections"),
    "invalid YAML": ("train: {steps: [1, 2}\n", [], "not valid YAML (line 1)"),
    "--set unknown key": ("{}\n", ["--set", "optim.lrr=1"], "optim.lrr: unknown key; did you mean 'optim.lr'?"),
    "--set typed value": ("{}\n", ["--set", "train.steps=abc"], "train.steps: expected an integer, got 'abc'"),
    "--set without =": ("{}\n", ["--set", "train.steps"], "--set 'train.steps': expected KEY=VALUE"),
    "--set into a value": ("{}\n", ["--set", "train.steps.x=1"], "train.steps: expected an integer"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_recipe_is_one_line_exit_2(name, tmp_path, monkeypatch, capsys):
    text, extra, expected = CASES[name]
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    monkeypatch.setattr(sys, "argv", ["dsmctl", "train", str(path), *extra, "--dry-run"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]


def test_batch_not_divisible_by_processes(tmp_path, monkeypatch, capsys):
    """WORLD_SIZE (set by torchrun / accelerate launch) is checked before any process group forms."""
    path = tmp_path / "r.yaml"
    path.write_text("model: {widths: [8, 16], mid_width: 16, layers_per_block: 2}\ntrain: {batch_size: 8}\n")
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setattr(sys, "argv", ["dsmctl", "train", str(path), "--dry-run"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    line = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "\n" not in line
    assert "train.batch_size: 8 is not divisible by the number of processes (3)" in line
    with pytest.raises(TrainError, match="not divisible by the number of processes"):
        train(load_recipe(path), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_dry_run_prints_resolved_recipe_parameters_and_memory(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(sys, "argv", ["dsmctl", "train", str(ROOT / "recipes" / "quickstart.yaml"), "--dry-run",
                                      "--set", "optim.lr=2e-4", "--out", str(tmp_path / "run")])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code in (0, None)
    err = capsys.readouterr().err
    assert "lr: 0.0002" in err and "parameters" in err and "GiB" in err
    assert "global batch 64 = 2 process(es) x 32" in err
    assert not (tmp_path / "run").exists()


def test_real_cli_error_has_no_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim: {lr: -1}\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-m", "dsmctl", "train", str(path)], env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.strip() == f"error: {path}: optim.lr: expected a positive learning rate, got -1.0"


@pytest.mark.skipif(any(importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX")),
                    reason="a TensorBoard writer is installed")
def test_tensorboard_without_its_package_is_refused_before_anything_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["dsmctl", "train", str(ROOT / "recipes" / "quickstart.yaml"),
                                      "--set", "train.tensorboard=true", "--out", str(tmp_path / "run")])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    line = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "\n" not in line and "needs the tensorboard package" in line
    assert not (tmp_path / "run").exists()
