"""Slow validations (CI's second step): paper Fig. 1 on GSM d = 1000, and the quickstart vs its baseline."""
import time
from pathlib import Path

import pytest

from dsmctl.engine.trainer import train
from dsmctl.nll.evaluate import eval_nll
from dsmctl.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run(recipe, out, overrides):
    train(load_recipe(ROOT / "recipes" / recipe, overrides), out, resume="never", progress=False)
    return eval_nll(out, device="cpu")


def test_gsm1000_dual_recovers_the_true_nll_and_single_does_not(tmp_path):
    """Dual SM within 0.01 nats/dim of the truth (paper: 2.0975 vs 2.1115); single SM off by >> 0.1."""
    quiet = ["train.ckpt_every=100000", "train.log_every=1000"]
    # The recipe as is for dual (a 4k-step run is still 0.38 nats/dim off at small t: the time score needs
    # the full schedule); single SM is off by >> 0.1 however long it trains, so it gets a short run.
    dual = run("gsm1000.yaml", tmp_path / "dual", quiet)
    single = run("gsm1000.yaml", tmp_path / "single", ["loss.mode=single", "train.steps=1500", *quiet])
    gap_dual = dual["nll"]["nats_per_dim"] - dual["truth"]["nats_per_dim"]
    gap_single = single["nll"]["nats_per_dim"] - single["truth"]["nats_per_dim"]
    print(f"GSM d=1000: dual - truth = {gap_dual:+.4f}, single - truth = {gap_single:+.4f} nats/dim")
    assert abs(gap_dual) < 0.01
    assert gap_single > 0.1


def test_quickstart_beats_the_gaussian_baseline_on_held_out_patches(tmp_path):
    """The README main job: the quickstart energy model has a lower NLL than a Gaussian fitted to the same
    training patches, on the 500 held-out test patches, and trains in well under 10 minutes."""
    start = time.time()
    res = run("quickstart.yaml", tmp_path / "qs", ["train.log_every=500"])
    elapsed = time.time() - start
    model, base = res["nll"]["bits_per_dim"], res["baseline"]["bits_per_dim"]
    print(f"quickstart: {model:.4f} bits/dim vs Gaussian {base:.4f} bits/dim in {elapsed:.0f} s")
    assert res["nll"]["n_images"] == 500 and res["nll"]["quantization_bits"] == 8
    assert model < base - 0.3  # measured: 4.34 vs 5.71 bits/dim
