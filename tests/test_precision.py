"""bf16 autocast (with the fp32 islands of engine/precision.py) against fp32, on a fixed batch.

Stated tolerance (docs/training.md): loss within 1e-4 relative, each per-image time-score term within
5e-4 absolute, parameter gradient within 2% in relative L2 norm and cosine similarity above 0.9999.
Measured here (CPU bf16): 6e-6, 1.0e-4, 0.67%, 0.99999; without the fp32 islands 1e-4, 1.05e-3, 2.6%,
0.9997, which would fail the time-term and gradient bounds.
The model is trained for a few steps first: at initialization f is nearly zero and anything passes.
"""
import numpy as np
import pytest
import torch

from dsmctl.data import open_split
from dsmctl.engine.precision import autocast, exact_fp32, keep_fp32, set_fp32_precision
from dsmctl.nn.build import build_model
from dsmctl.engine.objectives import sample_t, score_matching_loss
from dsmctl.recipe import load_recipe

RECIPE = load_recipe(raw={"model": {"widths": [8, 16], "mid_width": 32, "layers_per_block": 2, "embedding": "logt"}})


def batch(data, start, seed):
    g = torch.Generator().manual_seed(seed)
    x = data.batch(np.arange(start, start + 16))
    return x, sample_t(16, 1e-6, 10.0, generator=g), torch.randn(x.shape, generator=g)


@pytest.fixture(scope="module")
def trained():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    data = open_split("demo", "train")
    torch.manual_seed(1)
    model = build_model(RECIPE.model, data.shape)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for step in range(25):
        loss, _ = score_matching_loss(model, *batch(data, 16 * step, 100 + step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    yield data, {k: v.clone() for k, v in model.state_dict().items()}
    torch.set_num_threads(threads)


def loss_and_grads(data, state, precision):
    model = build_model(RECIPE.model, data.shape)
    model.load_state_dict(state)
    if precision == "bf16":
        keep_fp32(model)
    with autocast("cpu", precision):
        loss, terms = score_matching_loss(model, *batch(data, 2000, 0))
    loss.backward()
    return loss, terms, torch.cat([p.grad.flatten() for p in model.parameters()])


def test_bf16_loss_and_gradients_match_fp32(trained):
    data, state = trained
    l32, t32, g32 = loss_and_grads(data, state, "fp32")
    l16, t16, g16 = loss_and_grads(data, state, "bf16")
    assert l32.dtype == l16.dtype == torch.float32  # the reduction and the loss stay fp32
    assert t32["space"].mean() < 0.95  # a model that does something
    assert abs(l16.item() - l32.item()) <= 1e-4 * abs(l32.item())
    assert (t16["time"] - t32["time"]).abs().max() <= 5e-4
    assert (g16 - g32).norm() <= 0.02 * g32.norm()
    assert torch.nn.functional.cosine_similarity(g16, g32, 0) > 0.9999


def test_fp32_islands_are_applied_once():
    model = build_model(RECIPE.model, (1, 16, 16))
    names = keep_fp32(model)
    assert "net.embed" in names and "net.out" in names and any("norm" in n for n in names)
    assert keep_fp32(model) == []  # idempotent
    radial = build_model(load_recipe(raw={"model": {"kind": "radial"}}).model, (10,))
    assert keep_fp32(radial) == ["RadialEnergy"]  # the whole radial energy stays fp32


def test_tf32_settings():
    set_fp32_precision(True)
    assert torch.backends.cudnn.conv.fp32_precision == "tf32"
    with exact_fp32():
        assert torch.backends.cuda.matmul.fp32_precision == "ieee"
        assert torch.backends.cudnn.conv.fp32_precision == "ieee"
    assert torch.backends.cudnn.conv.fp32_precision == "tf32"
    set_fp32_precision(False)
    assert torch.backends.cudnn.conv.fp32_precision == "ieee"
