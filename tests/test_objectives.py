"""The dual score matching objective is stationary at the true energy, and only there."""
import math

import pytest
import torch
from torch import nn

from dsmctl.nn.densities import Gaussian, gsm
from dsmctl.nn.energy import EnergyOutput, as_batch_t, parse_need
from dsmctl.engine.objectives import sample_t, score_matching_loss, time_target


class Perturbed(nn.Module):
    """U_true(y, t) + sum_j theta_j g_j(y, t), with a few smooth perturbations g_j."""

    def __init__(self, density, scale=1.0):
        super().__init__()
        self.density, self.scale = density, scale
        self.theta = nn.Parameter(torch.zeros(4, dtype=torch.float64))

    def g(self, y, t):
        d = y[0].numel()
        r2 = y.flatten(1).square().sum(1) / d
        s = y.flatten(1).sum(1) / math.sqrt(d)
        lt = torch.log(t)
        return torch.stack([r2 * d / (1 + t), s * torch.sqrt(t + 0.1), d * lt / (1 + lt.square()), r2 * s], 1)

    def forward(self, y, t, need=("energy",), create_graph=False):
        need = parse_need(need)
        t = as_batch_t(t, y)
        base = self.density(y, t, need=need | {"energy"})
        yl, tl = y.detach().requires_grad_(), t.detach().requires_grad_()
        # The true energy with a different variance scale is the "wrong model" control.
        pert = (self.g(yl, tl) * self.theta).sum(1)
        gy, gt = torch.autograd.grad(pert.sum(), (yl, tl), create_graph=True)
        out = EnergyOutput(y, t, energy=base.energy + pert)
        if "grad_y" in need:
            out.grad_y = self.scale * base.grad_y + gy
        if "grad_t" in need:
            out.grad_t = base.grad_t + gt
        return out


def mean_gradient(model, density, mode, n_batches=40, batch=500, t_range=(1e-2, 1e2), seed=0):
    g = torch.Generator().manual_seed(seed)
    grads = []
    for _ in range(n_batches):
        x = density.sample(batch, g)
        t = sample_t(batch, *t_range, generator=g, dtype=torch.float64)
        z = torch.randn(x.shape, generator=g, dtype=torch.float64)
        loss, _ = score_matching_loss(model, x, t, z, mode)
        grads.append(torch.autograd.grad(loss, model.theta)[0])
    grads = torch.stack(grads)
    return grads.mean(0), grads.std(0) / math.sqrt(n_batches)


@pytest.mark.parametrize("name", ["gaussian", "gsm"])
@pytest.mark.parametrize("mode", ["dual", "single"])
def test_true_energy_is_stationary(name, mode):
    d = 16
    density = Gaussian.from_covariance(torch.diag(torch.linspace(0.1, 4.0, d, dtype=torch.float64))) \
        if name == "gaussian" else gsm(d, (1.0, 16.0))
    mean, se = mean_gradient(Perturbed(density), density, mode)
    assert (mean.abs() < 4 * se + 1e-12).all(), (mean, se)


def test_wrong_energy_is_not_stationary():
    """The same check fails for a wrong score, so the stationarity test can fail."""
    d = 16
    density = gsm(d, (1.0, 16.0))
    mean, se = mean_gradient(Perturbed(density, scale=0.9), density, "dual")
    assert (mean.abs() > 8 * se).any(), (mean, se)


def test_time_target_has_the_true_conditional_mean(gen):
    """E[d/(2t) - ||y-x||^2/(2t^2) | y] = dU/dt for a GSM, by sampling x from the exact posterior."""
    d, t = 8, 0.5
    variances, weights = (1.0, 16.0), (0.5, 0.5)
    density = gsm(d, variances, list(weights))
    y = density.sample(3, gen) + math.sqrt(t) * torch.randn(3, d, generator=gen, dtype=torch.float64)
    truth = density(y, t, need=("grad_t",)).grad_t
    comps = [Gaussian.isotropic((d,), v)(y, t).energy for v in variances]
    resp = torch.softmax(torch.stack([math.log(w) - e for w, e in zip(weights, comps)], 1), 1)
    n = 200_000
    for i in range(3):
        k = torch.multinomial(resp[i], n, replacement=True, generator=gen)
        s = torch.tensor(variances, dtype=torch.float64)[k][:, None]
        post_mean, post_var = s / (s + t) * y[i], s * t / (s + t)
        x = post_mean + post_var.sqrt() * torch.randn(n, d, generator=gen, dtype=torch.float64)
        target = time_target(x, y[i].expand(n, d), torch.full((n,), t, dtype=torch.float64))
        se = target.std() / math.sqrt(n)
        assert abs(target.mean() - truth[i]) < 5 * se, (target.mean(), truth[i], se)


def test_loss_terms_are_order_one_at_the_truth():
    """In z-units both terms are O(1) at every t: space -> 1 - E||sqrt(t) grad U||^2/d, time -> var/(2d) etc."""
    d = 64
    density = gsm(d, (1.0, 16.0))
    g = torch.Generator().manual_seed(1)
    x = density.sample(4000, g)
    for t_val in (1e-6, 1e-2, 1e2):
        t = torch.full((4000,), t_val, dtype=torch.float64)
        z = torch.randn(x.shape, generator=g, dtype=torch.float64)
        _, terms = score_matching_loss(density, x, t, z, "dual")
        assert 0 <= terms["space"].mean() <= 1.01
        assert terms["time"].mean() < 1.0
