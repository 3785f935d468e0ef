"""Exact resume: an uninterrupted run against one killed with SIGKILL (or stopped with SIGTERM) and resumed
with --resume auto must end with bit-identical weights, EMA and metrics (one process, CPU)."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
STEPS, CKPT_EVERY = 40, 10
TINY = {"model.widths": "[8,16]", "model.mid_width": 16, "model.layers_per_block": 2, "train.batch_size": 8,
        "train.steps": STEPS, "train.ckpt_every": CKPT_EVERY, "train.log_every": 5, "train.keep_last": 2,
        "train.ema": 0.9, "eval.n_images": 20, "eval.batch_size": 20, "train.progress_every_s": 0.01}


def train_cmd(out, *extra):
    sets = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]
    return [sys.executable, "-m", "dsmctl", "train", str(ROOT / "recipes" / "quickstart.yaml"), *sets,
            "--out", str(out), *extra]


def env():
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1")


def run(out, *extra):
    p = subprocess.run(train_cmd(out, *extra), env=env(), capture_output=True, text=True, timeout=300)
    return p.returncode, p.stderr


def start_and_interrupt(out, sig):
    """Start a run, send `sig` as soon as its first checkpoint exists; returns (exit code, stderr)."""
    p = subprocess.Popen(train_cmd(out), env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    latest = out / "checkpoints" / "latest"
    deadline = time.time() + 240
    while not latest.exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    p.send_signal(sig)
    _, stderr = p.communicate(timeout=240)
    return p.returncode, stderr


def final_tensors(run_dir):
    ck = run_dir / "checkpoints" / f"step-{STEPS:07d}"
    out = {}
    for name in ("model.safetensors", "ema.safetensors"):
        out.update({f"ckpt/{name}/{k}": v for k, v in load_file(str(ck / name)).items()})
    for name in ("model.safetensors", "model-raw.safetensors"):
        out.update({f"export/{name}/{k}": v for k, v in load_file(str(run_dir / name)).items()})
    return out


def losses(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r["space"], r["time"], r["lr"]) for r in rows if "loss" in r]


def assert_identical(a, b):
    ta, tb = final_tensors(a), final_tensors(b)
    assert ta.keys() == tb.keys() and len(ta) > 20
    for k in ta:
        assert torch.equal(ta[k], tb[k]), f"{k} differs after resume: {(ta[k] - tb[k]).abs().max()}"
    assert losses(a) == losses(b)  # no duplicated or missing steps, same values
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert sa["normalization"]["constant"] == sb["normalization"]["constant"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    code, stderr = run(out)
    assert code == 0, stderr[-3000:]
    return out


def test_kill9_then_resume_auto_gives_identical_weights(reference, tmp_path):
    out = tmp_path / "run"
    code, stderr = start_and_interrupt(out, signal.SIGKILL)
    assert code == -signal.SIGKILL, stderr[-2000:]
    assert not (out / "summary.json").exists(), "the run finished before it was killed; the test proves nothing"
    code, stderr = run(out)
    assert code == 0, stderr[-3000:]
    resumed = [line for line in stderr.splitlines() if "resumed from" in line]
    assert len(resumed) == 1
    for part in ("step ", "optimizer", "EMA (", "RNG (torch", "data position", "world size 1 -> 1"):
        assert part in resumed[0], resumed[0]
    assert_identical(reference, out)


def main_in_process(monkeypatch, out, *extra):
    """`dsmctl train ...` through cli.main() in this process; returns the exit code."""
    from dsmctl import cli

    monkeypatch.setattr(sys, "argv", ["dsmctl"] + train_cmd(out, *extra)[3:])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    return exit_info.value.code


def test_sigterm_saves_at_step_boundary_exits_143_and_resumes_exactly(reference, tmp_path, monkeypatch, capsys):
    """In this process (the signal arrives from a thread once the first checkpoint exists), to save two
    interpreter start-ups; one thread, like the subprocess runs, so that the numerics are the same."""
    out = tmp_path / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def send_sigterm():
        while not (out / "checkpoints" / "latest").exists():
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    sender = threading.Thread(target=send_sigterm, daemon=True)
    try:
        sender.start()
        code = main_in_process(monkeypatch, out)
        stderr = capsys.readouterr().err
        assert code == 143, stderr[-3000:]
        assert "SIGTERM: saved" in stderr
        latest = (out / "checkpoints" / "latest").read_text().strip()
        state = torch.load(out / "checkpoints" / latest / "state.pt", weights_only=True)
        assert 0 < state["step"] < STEPS and not (out / "summary.json").exists()
        code = main_in_process(monkeypatch, out)
        stderr = capsys.readouterr().err
        assert code in (0, None), stderr[-3000:]
        assert f"resumed from {out / 'checkpoints' / latest}: step {state['step']}" in stderr
    finally:
        torch.set_num_threads(threads)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is removed after training
    assert_identical(reference, out)
