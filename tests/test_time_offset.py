"""model.time_offset: learned (not in the paper): a y-independent g(t) that the time term alone fits. On a closed-form
energy shifted by a drift phi*d*log t (which no space term can see), training g with the dual loss removes the
drift, so the one-shot NLL returns to the truth; with the time term off, g stays zero and the drift stays."""
import math

import pytest
import torch
from torch import nn

from dsmctl.engine.objectives import sample_t, score_matching_loss
from dsmctl.nn.build import build_model
from dsmctl.nn.densities import gsm
from dsmctl.nn.energy import TimeOffset
from dsmctl.nn.output import EnergyOutput, as_batch_t, parse_need
from dsmctl.recipe import RecipeError, load_recipe

pytestmark = pytest.mark.usefixtures("one_thread")
D, PHI, T_MIN, T_MAX = 16, 0.3, 1e-3, 10.0


class DriftPlusOffset(nn.Module):
    """U_true(y, t) + PHI * d * log t + g(t): the drift breaks normalization (d/dt log Z = -PHI d / t)."""

    def __init__(self, density):
        super().__init__()
        self.density = density
        self.offset = TimeOffset(D).double()

    def forward(self, y, t, need=("energy",), create_graph=False):
        need = parse_need(need)
        t = as_batch_t(t, y).detach().requires_grad_(True)
        with torch.enable_grad():
            g = self.offset(t)
            g_t = torch.autograd.grad(g.sum(), t, create_graph=True)[0]
        true = self.density(y, t.detach(), need=need | {"energy"})
        out = EnergyOutput(y, t.detach(), energy=true.energy + PHI * D * t.detach().log() + g)
        if "grad_y" in need:
            out.grad_y = true.grad_y
        if "grad_t" in need:
            out.grad_t = true.grad_t + PHI * D / t.detach() + g_t
        return out


def train(time_weight, steps=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    density = gsm(D)
    model = DriftPlusOffset(density)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1 - k / steps)  # the time target is noisy: anneal
    for _ in range(steps):
        x = density.sample(256, g)
        t = sample_t(256, T_MIN, T_MAX, generator=g, dtype=torch.float64)
        z = torch.randn(x.shape, generator=g, dtype=torch.float64)
        loss, _ = score_matching_loss(model, x, t, z, "dual", time_weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
        decay.step()
    return model, density


def one_shot_error(model, density, n=2000, seed=1):
    """One-shot NLL error against the truth in nats/dim: U(x, T_MIN) + c with c fixed at T_MAX on the truth."""
    g = torch.Generator().manual_seed(seed)
    x = density.sample(n, g)
    y = x + math.sqrt(T_MAX) * torch.randn(x.shape, generator=g, dtype=torch.float64)
    with torch.no_grad():
        c = (density(y, T_MAX).energy - model(y, T_MAX).energy).mean()
        err = (model(x, T_MIN).energy + c - density(x, T_MIN).energy).mean()
    return err.item() / D


def test_learned_offset_removes_a_drift_no_space_term_sees():
    drifted = one_shot_error(DriftPlusOffset(gsm(D)), gsm(D))
    assert drifted == pytest.approx(PHI * math.log(T_MIN / T_MAX), rel=1e-6)  # -2.76 nats/dim: the closed form
    model, density = train(time_weight=1.0)
    assert abs(one_shot_error(model, density)) < 0.02 * abs(drifted), one_shot_error(model, density)


def test_without_the_time_term_the_offset_stays_zero():
    model, density = train(time_weight=0.0, steps=50)
    assert torch.count_nonzero(model.offset.coef) == 0
    assert one_shot_error(model, density) == pytest.approx(PHI * math.log(T_MIN / T_MAX), rel=1e-6)


def test_recipe_key_adds_g_of_t_to_the_energy_only():
    raw = {"model": {"widths": [4, 8], "mid_width": 8, "embedding": "logt", "time_offset": "learned"}}
    model = build_model(load_recipe(raw=raw).model, (1, 8, 8)).double()
    plain = build_model(load_recipe(raw={"model": {**raw["model"], "time_offset": "none"}}).model, (1, 8, 8)).double()
    plain.net.load_state_dict(model.net.state_dict())
    with torch.no_grad():
        model.offset.coef.copy_(torch.linspace(-1, 1, model.offset.coef.numel()))
    y = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    t = torch.tensor([1e-6, 1e-2, 5.0], dtype=torch.float64)
    a, b = model(y, t, need=("energy", "grad_y", "grad_t")), plain(y, t, need=("energy", "grad_y", "grad_t"))
    g = model.offset(t)
    assert torch.allclose(a.energy, b.energy + g) and torch.allclose(a.grad_y, b.grad_y)
    s = t.detach().clone().requires_grad_(True)
    g_t = torch.autograd.grad(model.offset(s).sum(), s)[0]
    assert torch.allclose(a.grad_t, b.grad_t + g_t) and g.abs().min() > 0
    fresh = build_model(load_recipe(raw=raw).model, (1, 8, 8))
    assert torch.count_nonzero(fresh.offset.coef) == 0  # zero-initialized: the paper's model at step 0


def test_offset_slope_is_d_times_the_coefficients():
    off = TimeOffset(10).double()
    with torch.no_grad():
        off.coef[-1] = 0.5  # the last knot sits above the range: a pure -(d/2) log t there
    t = torch.tensor([1e-8, 1e-4, 1.0], dtype=torch.float64).requires_grad_(True)
    slope = torch.autograd.grad(off(t).sum(), t)[0] * t  # d g / d log t
    s = torch.log(t.detach() + 1e-9)
    want = -5.0 * torch.sigmoid(off.knots[-1] - s) * t.detach() / (t.detach() + 1e-9)  # ds/dlog t = t / (t + 1e-9)
    assert torch.allclose(slope, want, rtol=1e-9) and torch.allclose(slope[1:], torch.full((2,), -5.0).double(), rtol=1e-3)


def test_offset_is_refused_where_nothing_trains_it():
    with pytest.raises(RecipeError, match="model.time_offset"):
        load_recipe(raw={"model": {"time_offset": "learned"}, "loss": {"mode": "single"}})
    with pytest.raises(RecipeError, match="model.time_offset"):
        load_recipe(raw={"model": {"kind": "denoiser", "time_offset": "learned"}, "loss": {"mode": "single"}})
