"""Slow (CI's second step): Fashion-MNIST end to end through the CLI on a small subset.

prepare (the Debian package's IDX files) -> train recipes/fashion-mnist.yaml on 4,000 training images for a few
hundred steps -> eval-nll on 1,000 held-out test images: the energy beats the Gaussian fitted to the whole training
split (60,000 images, a stronger baseline than one fitted to the subset). .ci/run installs
`dataset-fashion-mnist` when it can (root + apt-get); elsewhere this skips with the reason.
The fast suite keeps its fabricated IDX files (tests/test_data_sources.py).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FASHION = Path(os.environ.get("DSMCTL_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not FASHION.is_dir(), reason=f"Fashion-MNIST not installed at {FASHION} "
                                 "(apt-get install dataset-fashion-mnist, or set DSMCTL_FASHION_MNIST)")]


def cli(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "dsmctl", *map(str, args)], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_fashion_mnist_subset_end_to_end_beats_the_gaussian(tmp_path):
    cli("prepare", f"fashion-mnist:{FASHION}", "--out", "fm", cwd=tmp_path)
    manifest = json.loads((tmp_path / "fm" / "manifest.json").read_text())
    assert {s: v["n"] for s, v in manifest["splits"].items()} == {"train": 60000, "test": 10000}
    cli("train", ROOT / "recipes" / "fashion-mnist.yaml", "--out", "run", "--set", "data.source=fm",
        "--set", "data.subset=first:4000", "--set", "train.steps=400", "--set", "train.ckpt_every=200",
        "--set", "train.log_every=100", "--set", "eval.n_images=1000", "-q", cwd=tmp_path)
    res = json.loads(cli("eval-nll", "run", "--n-images", "1000", "--json", cwd=tmp_path).stdout)
    model, base = res["nll"]["bits_per_dim"], res["baseline"]["bits_per_dim"]
    assert "60000 examples" in res["baseline"]["name"]
    print(f"Fashion-MNIST, 4,000 images, 400 steps: {model:.4f} bits/dim vs Gaussian {base:.4f} on 1,000 test images")
    # The headline is the valid bound (dequantized training, p_t at the recipe's bound_t); the plug-in beside it.
    assert res["estimator"] == "dequantized" and res["nll"]["is_bound"] and res["nll"]["bound_t"] == 1e-6
    assert res["nll"]["n_images"] == 1000 and res["one_shot"]["quantization_bits"] == 8 and res["baseline"]["is_bound"]
    assert not [f for f in res["flags"] if f["code"].startswith("below-zero")]
    assert model < base - 0.1
