"""The heat-equation consistency penalty (loss.consistency_weight): zero in mean for the true energy, positive for
an inconsistent one, and strong enough on its own to drive a closed-form energy back to consistency."""
import math

import pytest
import torch
from torch import nn

from dsmctl.nn.densities import gsm
from dsmctl.nn.output import EnergyOutput, as_batch_t, parse_need
from dsmctl.engine.objectives import consistency_term, heat_residual_stein, paired, sample_t, score_matching_loss

pytestmark = pytest.mark.usefixtures("one_thread")


class Drifting(nn.Module):
    """U_true(y, k t) + phi log t with k = exp(kappa): kappa mis-times the family (seen by both the space term and
    the penalty); phi shifts the energy by a y-independent function of t, which no space term can see (grad_y is
    unchanged) but which breaks normalization (d/dt log Z = -phi/t)."""

    def __init__(self, density, kappa=0.0, phi=0.0):
        super().__init__()
        self.density = density
        self.kappa = nn.Parameter(torch.tensor(float(kappa), dtype=torch.float64))
        self.phi = nn.Parameter(torch.tensor(float(phi), dtype=torch.float64))

    def forward(self, y, t, need=("energy",), create_graph=False):
        need = parse_need(need)
        t = as_batch_t(t, y)
        k = self.kappa.exp()
        base = self.density(y, k * t, need=need | {"energy"})
        out = EnergyOutput(y, t, energy=base.energy + self.phi * t.log())
        if "grad_y" in need:
            out.grad_y = base.grad_y
        if "grad_t" in need:
            out.grad_t = k * base.grad_t + self.phi / t
        return out


def batch(density, n, g, t_range=(1e-2, 1e1)):
    x = density.sample(n, g)
    t = sample_t(n, *t_range, generator=g, dtype=torch.float64)
    z = torch.randn(x.shape, generator=g, dtype=torch.float64)
    return x, t, z


def test_pairs_share_image_and_noise_level():
    x, t = torch.arange(6.0).reshape(6, 1), torch.arange(6.0) + 1
    px, pt = paired(x, t)
    assert px.flatten().tolist() == [0, 1, 2, 0, 1, 2] and pt.tolist() == [1, 2, 3, 1, 2, 3]


def test_residual_has_zero_mean_for_the_true_energy_and_not_for_a_drifting_one(gen):
    density = gsm(16, (0.5, 2.0))
    x, t, z = batch(density, 40_000, gen)
    y = x + t.sqrt()[:, None] * z
    for phi, expected in ((0.0, 0.0), (3.0, 3.0 / 16)):  # phi log t adds t * phi / t / d = phi / d to rho
        rho = heat_residual_stein(Drifting(density, phi=phi)(y, t, need=("grad_y", "grad_t")), z).detach()
        se = rho.std().item() / math.sqrt(len(rho))
        assert abs(rho.mean().item() - expected) < 4 * se, (phi, rho.mean().item(), se)


def test_penalty_estimates_the_squared_conditional_mean(gen):
    """E[rho_1 rho_2] = E_x[(E_z[rho | x, t])^2]: 0 for the truth, (phi/d)^2 for a y-independent drift phi log t."""
    density = gsm(16, (0.5, 2.0))
    x, t, z = batch(density, 40_000, gen)
    px, pt = paired(x, t)
    y = px + pt.sqrt()[:, None] * z
    for phi in (0.0, 2.0):
        pair = consistency_term(Drifting(density, phi=phi)(y, pt, need=("grad_y", "grad_t")), z).detach()
        se = pair.std().item() / math.sqrt(len(pair))
        assert abs(pair.mean().item() - (phi / 16) ** 2) < 4 * se, (phi, pair.mean().item(), se)


def train(weight, steps=300, phi=2.0, kappa=0.5, seed=0):
    """Space term + weight x penalty (no time term), Adam from a drifting, mis-timed start; returns (kappa, phi)."""
    density = gsm(16, (0.5, 2.0))
    model = Drifting(density, kappa=kappa, phi=phi)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        loss, _ = score_matching_loss(model, *batch(density, 256, g), mode="single", consistency_weight=weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.kappa.item(), model.phi.item()


def test_penalty_alone_restores_consistency():
    kappa, phi = train(weight=100.0)
    assert abs(phi) < 0.3 and abs(kappa) < 0.1, (kappa, phi)


def test_without_penalty_the_drift_stays():
    """Control: the space term fixes the timing but cannot see phi (grad_y does not depend on it)."""
    kappa, phi = train(weight=0.0)
    assert abs(kappa) < 0.1 and phi == pytest.approx(2.0)


def test_reversed_penalty_runs_away():
    kappa, phi = train(weight=-100.0)
    assert abs(phi) > 4.0, (kappa, phi)


def test_dual_loss_with_penalty_keeps_its_terms_over_the_pairs(gen):
    density = gsm(16, (0.5, 2.0))
    x, t, z = batch(density, 64, gen)
    model = Drifting(density)
    loss, terms = score_matching_loss(model, x, t, z, "dual", 1.0, 5.0)
    assert terms["space"].shape == (64,) and terms["consistency"].shape == (32,)
    total = terms["space"].mean() + terms["time"].mean() + 5.0 * terms["consistency"].mean()
    assert loss.item() == pytest.approx(total.item(), rel=1e-12)
    with pytest.raises(ValueError, match="odd"):
        score_matching_loss(model, x[:63], t[:63], z[:63], "dual", 1.0, 5.0)
