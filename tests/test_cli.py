"""End-to-end through the CLI on 16x16 data: prepare -> train a few dozen steps -> eval-nll --json."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "model.widths=[8,16]", "--set", "model.mid_width=16", "--set", "model.layers_per_block=2",
        "--set", "train.batch_size=16", "--set", "train.log_every=10", "--set", "eval.batch_size=256"]


def dsmctl(*args, cwd=None, check=True):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "dsmctl", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                       env=env, timeout=600)
    if check and r.returncode != 0:
        raise AssertionError(f"dsmctl {' '.join(map(str, args))} exited {r.returncode}:\n{r.stderr}")
    return r


def test_prepare_train_eval_end_to_end(tmp_path):
    data = tmp_path / "demo"
    dsmctl("prepare", "demo", "--out", data)
    assert (data / "manifest.json").is_file()
    run = tmp_path / "run"
    dsmctl("train", ROOT / "recipes/quickstart.yaml", "--out", run, "--set", f"data.source={data}",
           "--set", "train.steps=30", *TINY, "--quiet")
    assert (run / "model.safetensors").is_file()
    r = dsmctl("eval-nll", run, "--json", "--n-images", "100", "--per-image", tmp_path / "p.csv")
    doc = json.loads(r.stdout)  # exactly one JSON document on stdout
    nll = doc["nll"]
    assert nll["n_images"] == 100 and nll["quantization_bits"] == 8 and nll["t"] == 0.0
    assert np.isfinite(nll["bits_per_dim"]) and doc["baseline"]["quantization_bits"] == 8
    assert "bits/dim" in r.stderr and "protocol" in r.stderr
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert rows[0] == "index,energy,log_p_db_per_dim,bits_per_dim" and len(rows) == 101


def test_every_command_has_help():
    for cmd in ("prepare", "train", "eval-nll", "generalize", "dimension", "sample"):
        r = dsmctl(cmd, "--help")
        assert "Usage" in r.stdout


@pytest.mark.parametrize("args, needle", [
    (["train", "nope.yaml"], "nope.yaml: no such recipe file"),
    (["eval-nll", "missing.safetensors"], "missing.safetensors: no such checkpoint"),
    (["prepare", "missing_dir", "--out", "x"], "missing_dir: no such file or folder"),
    (["train", "recipes/quickstart.yaml", "--set", "optim.lr=-1", "--dry-run"], "optim.lr: expected a positive"),
    (["train", "recipes/quickstart.yaml", "--set", "optim.lrr=1", "--dry-run"], "did you mean 'optim.lr'"),
])
def test_bad_input_is_one_line_exit_2(args, needle, tmp_path):
    r = dsmctl(*args, cwd=ROOT, check=False)
    assert r.returncode == 2
    assert needle in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_pickle_checkpoint_is_refused_and_runs_nothing(tmp_path):
    import pickle

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    bad = tmp_path / "model.safetensors"
    bad.write_bytes(pickle.dumps(Evil()))
    r = dsmctl("eval-nll", bad, check=False)
    assert r.returncode == 2 and "not a readable safetensors" in r.stderr
    assert not marker.exists()


def test_dry_run_of_the_paper_recipe_before_the_data_exists():
    r = dsmctl("train", "recipes/imagenet64.yaml", "--dry-run", "--shape", "3,64,64", "--json", cwd=ROOT)
    doc = json.loads(r.stdout)
    assert doc["parameters"] == 8_649_856 and doc["shape"] == [3, 64, 64]
    assert doc["recipe"]["optim"]["lr"] == 5e-4 and doc["recipe"]["train"]["batch_size"] == 128
