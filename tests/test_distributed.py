"""Two CPU processes (torchrun, gloo) against one: synchronized gradients, collective skips, the tie for
parameters that never reach the loss, sharded evaluation. The checks themselves run in ddp_worker.py."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import ddp_worker
from dsmctl.data import open_split
from dsmctl.nll.likelihood import normalization_constant

ROOT = Path(__file__).resolve().parents[1]


def cpu_env(**extra):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1")
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tests" / "ddp_worker.py"), str(out / "two")]
    p = subprocess.run(cmd, env=cpu_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    ddp_worker.run(out / "one")
    res = {}
    for name, rank in (("one", 0), ("two0", 0), ("two1", 1)):
        d = out / ("one" if name == "one" else "two")
        res[name] = (json.loads((d / f"rank{rank}.json").read_text()), load_file(str(d / f"rank{rank}.safetensors")))
    return res


def test_two_process_gradients_equal_single_process(runs):
    (info1, g1), (info2, g2), (_, g2b) = runs["one"], runs["two0"], runs["two1"]
    assert info1["world"] == 1 and info2["world"] == 2
    keys = [k for k in g1 if k.startswith(("unet.", "radial."))]
    assert len(keys) > 20 and set(keys) <= set(g2)
    for k in keys:
        assert torch.equal(g2[k], g2b[k]), f"{k}: ranks disagree after the all-reduce"
        assert torch.allclose(g2[k], g1[k], atol=1e-5, rtol=1e-5), f"{k}: {(g2[k] - g1[k]).abs().max()}"
    assert info1["loss"] == pytest.approx(info2["loss"], abs=1e-6)  # loss logged as the global-batch mean


def test_nonfinite_image_on_one_rank_skips_the_step_on_every_rank(runs):
    for name in ("two0", "two1"):
        info, _ = runs[name]
        assert "non-finite" in info["skip_reason"] and "on rank 1" in info["skip_reason"]
        assert "t in [" in info["skip_reason"]
        assert not info["recorded_after_skip"]  # no optimizer step happened
    assert runs["one"][0]["skip_reason"].startswith("non-finite")


def test_parameter_outside_the_loss_is_tied_and_synchronized(runs):
    for name in ("one", "two0", "two1"):
        info, grads = runs[name]
        assert info["radial_unreached"] == ["offset"]
        assert grads["radial.offset"].item() == 0.0


def test_without_the_tie_ddp_desynchronizes(runs):
    """What the tie prevents: gradients silently differ between ranks, then DDP fails a step later."""
    (_, g0), (info1, g1) = runs["two0"], runs["two1"]
    assert not torch.allclose(g0["untied0.net.0.weight"], g1["untied0.net.0.weight"])
    assert info1["untied_errors"] and "reduction" in info1["untied_errors"][0]
    assert runs["one"][0]["untied_errors"] == []


def test_sharded_evaluation_covers_every_image_once(runs):
    """Both anchors: the sharded constant (training's end) equals eval-nll's single-process one."""
    data = open_split("demo", "test").subset(list(range(37)))
    for anchor, key in (("gaussian", "constant"), ("paper", "constant_paper")):
        c_ref, se_ref = normalization_constant(ddp_worker.build_reference_model(), data, 10.0, anchor, 5, 0)
        for name in ("one", "two0", "two1"):
            info, _ = runs[name]
            assert info["gathered_indices"] == list(range(37)) and info["gathered_values_ok"]
            c, se = info[key]
            assert c == pytest.approx(c_ref, rel=1e-9, abs=1e-6) and se == pytest.approx(se_ref, rel=1e-6), anchor


def test_rng_states_gathered_per_rank(runs):
    assert runs["two0"][0]["rng_rows"] == 2 and runs["two0"][0]["rng_rows_distinct"]
