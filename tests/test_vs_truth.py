"""eval-nll on synthetic data compares the model with the closed-form truth image by image (per-image file column
truth_energy, report vs_truth), and those numbers are the truth's own -log p_t of the same noisy images."""
import csv
import math

import numpy as np
import pytest
import torch
import yaml

from dsmctl.nll.evaluate import eval_nll, versus_truth

pytestmark = pytest.mark.usefixtures("one_thread")


def test_versus_truth_on_known_differences():
    g = torch.tensor([10.0, 20.0, 35.0, 50.0])
    shifted = versus_truth(g + 8.0, g, d=4)  # +2 nats/dim on every image
    assert shifted["mean_nats_per_dim"] == pytest.approx(2.0)
    assert shifted["stderr"] == pytest.approx(0.0) and shifted["rms_nats_per_dim"] == pytest.approx(2.0)
    assert shifted["correlation"] == pytest.approx(1.0)
    noisy = g + torch.tensor([1.0, -3.0, 2.0, 0.0])
    r = versus_truth(noisy, g, d=2)
    diff = np.array([1.0, -3.0, 2.0, 0.0]) / 2
    assert r["mean_nats_per_dim"] == pytest.approx(diff.mean())
    assert r["stderr"] == pytest.approx(diff.std(ddof=1) / 2)
    assert r["rms_nats_per_dim"] == pytest.approx(math.sqrt((diff ** 2).mean()))
    assert r["correlation"] == pytest.approx(np.corrcoef(noisy.numpy(), g.numpy())[0, 1])
    reversed_ = versus_truth(-g, g, d=1)
    assert reversed_["correlation"] == pytest.approx(-1.0)
    with_nan = versus_truth(torch.tensor([1.0, float("nan"), 3.0, 5.0]), torch.tensor([1.0, 2.0, 3.0, 4.0]), d=1)
    assert with_nan["n_images"] == 3


@pytest.fixture(scope="module")
def gsm_run(tmp_path_factory):
    from pathlib import Path

    from dsmctl.engine.trainer import train
    from dsmctl.recipe import load_recipe

    root = Path(__file__).resolve().parents[1]
    raw = yaml.safe_load((root / "recipes" / "gsm16.yaml").read_text())
    raw["model"].update(widths=[4, 8], mid_width=8)
    raw["train"].update(steps=3, batch_size=8, log_every=1, ckpt_every=3)
    raw["eval"].update(batch_size=64)
    out = tmp_path_factory.mktemp("runs") / "gsm16"
    train(load_recipe(raw=raw), out, progress=False)
    return out


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("estimator", ["one-shot", "pf-ode"])
def test_per_image_truth_is_the_closed_form_of_the_same_noisy_images(gsm_run, tmp_path, estimator):
    from dsmctl.data import open_split, true_density
    from dsmctl.nll.likelihood import NOISE_STREAM
    from dsmctl.rng import indexed_normal

    n = 6 if estimator == "pf-ode" else 40
    path = tmp_path / "per_image.csv"
    res = eval_nll(gsm_run, estimator=estimator, n_images=n, per_image=path, probes=1, rtol=1e-3, atol=1e-3)
    rows = read_csv(path)
    assert len(rows) == n and "truth_energy" in rows[0]
    # independently: the truth's -log p_t at x + sqrt(t) z, z keyed by index as eval-nll draws it
    data = open_split("synthetic:gsm16", "test").subset(np.arange(n))
    truth, t = true_density("synthetic:gsm16"), res["truth"]["t"]
    idx = np.array([int(r["index"]) for r in rows])
    x = data.batch(idx).double()
    y = x + math.sqrt(t) * indexed_normal(idx, data.shape, 0, NOISE_STREAM, torch.float64, None)
    want = truth(y, torch.full((n,), t, dtype=torch.float64)).energy
    got = torch.tensor([float(r["truth_energy"]) for r in rows], dtype=torch.float64)
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-6)
    assert got.mean().item() / data.d == pytest.approx(res["truth"]["nats_per_dim"], rel=1e-6)
    model = torch.tensor([float(r["energy"]) for r in rows], dtype=torch.float64)
    v = res["vs_truth"]
    assert v["n_images"] == n
    assert v["mean_nats_per_dim"] == pytest.approx(((model - got) / data.d).mean().item(), rel=1e-6, abs=1e-9)
    assert v["correlation"] == pytest.approx(np.corrcoef(model.numpy(), got.numpy())[0, 1], rel=1e-6)
