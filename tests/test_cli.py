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
    nll, plug = doc["nll"], doc["one_shot"]
    # On 8-bit data the headline is the bound; the paper's plug-in stands beside it, labelled as not a bound.
    assert doc["estimator"] == "dequantized" and nll["is_bound"] and nll["draws"] == 4 and nll["bound_t"] == 0.0
    assert nll["n_images"] == 100 and plug["quantization_bits"] == 8 and plug["t"] == 0.0
    assert "not a bound" in plug["label"] and isinstance(doc["flags"], list)
    assert list(doc).index("nll") < list(doc).index("one_shot")  # the first bits_per_dim in the JSON is the bound's
    assert doc["baseline"]["is_bound"]
    assert "bits/dim" in r.stderr and "protocol" in r.stderr and "upper bound" in r.stderr
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert rows[0] == "index,energy,log_p_db_per_dim,bits_per_dim" and len(rows) == 101
    # The numbers, recomputed from the formulas (tests/reference.py) on the same 100 images: the constant (gaussian
    # anchor, t_max 10), each image's plug-in -log p = U + c and bound, bits/dim (+8), log p in dB/dim, means.
    import reference
    from dsmctl.nn.model_file import load_model

    model, _ = load_model(run)
    _, x = reference.images(100)
    c, c_se = reference.gaussian_anchor_constant(model, x, 10.0)
    assert nll["constant"] == pytest.approx(c, abs=1e-4) and nll["constant_stderr"] == pytest.approx(c_se, rel=1e-3)
    d = 256
    plug_bits = reference.one_shot_bits(model, x, c)
    assert plug["bits_per_dim"] == pytest.approx(float(plug_bits.mean()), abs=1e-6)
    se = np.hypot(float(plug_bits.std()) / np.sqrt(100), c_se / (d * reference.LN2))  # images' spread and the constant's
    assert plug["bits_per_dim_stderr"] == pytest.approx(se, rel=1e-3)
    bits = reference.iw_dequantized_bits(model, x, c, 4)
    table = np.array([[float(v) for v in row.split(",")] for row in rows[1:]])
    assert table[:, 0].tolist() == list(range(100))
    assert np.allclose(table[:, 1], (bits.numpy() - 8) * d * reference.LN2, rtol=1e-6, atol=1e-4)
    assert np.allclose(table[:, 3], bits.numpy(), rtol=1e-6, atol=1e-6)
    assert np.allclose(table[:, 2], reference.log_p_db(table[:, 1], d), rtol=1e-9)
    assert nll["bits_per_dim"] == pytest.approx(float(bits.mean()), abs=1e-6)
    se = np.hypot(float(bits.std()) / np.sqrt(100), c_se / (d * reference.LN2))
    assert nll["bits_per_dim_stderr"] == pytest.approx(se, rel=1e-3)
    assert doc["difference"]["bits_per_dim"] == pytest.approx(float((plug_bits - bits).mean()), abs=1e-6)


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
    """The dry run sizes the model from the recipe alone (nn/size.py); the network built from the same recipe has
    that many parameters, and the memory it reports holds at least the weights, gradients and two Adam moments."""
    import torch

    from dsmctl.nn.build import build_model
    from dsmctl.recipe import load_recipe

    r = dsmctl("train", "recipes/imagenet64.yaml", "--dry-run", "--shape", "3,64,64", "--json", cwd=ROOT)
    doc = json.loads(r.stdout)
    recipe = load_recipe(ROOT / "recipes" / "imagenet64.yaml")
    with torch.device("meta"):  # the parameters' shapes without allocating them
        built = sum(p.numel() for p in build_model(recipe.model, (3, 64, 64)).parameters())
    assert doc["parameters"] == built == 8_649_856 and doc["shape"] == [3, 64, 64] and doc["d"] == 3 * 64 * 64
    assert doc["memory_gib"] * 2**30 >= 4 * 4 * built  # float32 weights, gradients, Adam's two moments
    assert doc["batch_per_process"] == recipe.train.batch_size == 128 and doc["world_size"] == 1
    assert doc["recipe"]["optim"]["lr"] == recipe.optim.lr == 5e-4
