"""The same `dsmctl train` command under one process, torchrun and accelerate launch (2 CPU processes, gloo),
and a 2-process checkpoint resumed by one process. Slow: about 2 minutes on 2 shared cores."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.widths=[8,16]", "model.mid_width=16", "model.layers_per_block=2", "train.batch_size=8",
        "train.steps=20", "train.ckpt_every=10", "train.log_every=5", "eval.n_images=50"]
ARGS = ["train", str(ROOT / "recipes" / "quickstart.yaml"), *[a for s in TINY for a in ("--set", s)]]
LAUNCHERS = {
    "python": [sys.executable, "-m", "dsmctl"],
    "torchrun": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                 "-m", "dsmctl"],
    "accelerate": [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "dsmctl"],
}


def launch(launcher, out, *extra):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1")
    p = subprocess.run(LAUNCHERS[launcher] + ARGS + ["--out", str(out), *extra], env=env, capture_output=True,
                       text=True, timeout=400)
    assert p.returncode == 0, p.stderr[-4000:]
    return p.stderr


def weights(path):
    return load_file(str(path))


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "run"
    launch("python", out)
    return out


def assert_close(a, b, atol=1e-5):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=atol, rtol=0), f"{k}: {(wa[k] - wb[k]).abs().max()}"


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_two_processes_train_like_one(single, launcher, tmp_path):
    out = tmp_path / "run"
    stderr = launch(launcher, out)
    assert "global batch 8 (2 processes x 4)" in stderr
    assert stderr.count("[train] done") == 1  # progress and reports come from rank 0 only
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    # Same global batches, same lr schedule: after 20 Adam steps the weights agree to float rounding.
    assert_close(single / "model.safetensors", out / "model.safetensors")
    ref = json.loads((single / "summary.json").read_text())["normalization"]["constant"]
    assert summary["normalization"]["constant"] == pytest.approx(ref, abs=1e-3)


@pytest.mark.slow
def test_two_process_checkpoint_resumed_by_one_process(single, tmp_path):
    out = tmp_path / "run"
    launch("torchrun", out)
    shutil.rmtree(out / "checkpoints" / "step-0000020")  # as if preempted after step 10
    (out / "checkpoints" / "latest").write_text("step-0000010\n")
    (out / "model.safetensors").unlink()
    stderr = launch("python", out)
    line = next(x for x in stderr.splitlines() if "resumed from" in x)
    assert "step 10" in line and "world size 2 -> 1" in line and "RNG not restored" in line
    assert_close(single / "model.safetensors", out / "model.safetensors")
