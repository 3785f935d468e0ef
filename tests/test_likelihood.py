"""Normalization constant and one-shot NLL, checked on closed-form densities."""

import pytest
import torch

from dsmctl import units
from dsmctl.nn.densities import Gaussian, gsm
from dsmctl.nll.likelihood import fit_anchor, normalization_constant, one_shot_nll


class Shifted:
    """A density whose energy is off by a constant: what a network trained by dual SM looks like."""

    def __init__(self, density, shift):
        self.density, self.shift = density, shift

    def __call__(self, y, t, need=("energy",), create_graph=False):
        out = self.density(y, t, need)
        out.energy = out.energy + self.shift
        return out


def test_constant_recovers_a_shift_with_the_gaussian_anchor(gen):
    d = 32
    dens = gsm(d, (0.01, 0.05))
    x = dens.sample(4000, gen).float()
    c, se = normalization_constant(Shifted(dens, 123.4), x, t_max=100.0, anchor="gaussian")
    assert c == pytest.approx(-123.4, abs=max(4 * se, 0.05))
    assert se < 0.01  # per-image differences: tiny standard error


def test_paper_anchor_bias_matches_the_formula(gen):
    """The paper's anchor misses 1/2 sum log(1 + lambda/t_max): check it is that bias and nothing else."""
    d = 64
    variances = torch.linspace(1.0, 10.0, d, dtype=torch.float64)
    dens = Gaussian.from_covariance(torch.diag(variances))
    x = dens.sample(20000, gen).float()
    t_max = 100.0
    c, se = normalization_constant(dens, x, t_max=t_max, anchor="paper")
    bias = -0.5 * torch.log1p(variances / t_max).sum().item()
    assert c == pytest.approx(bias, abs=4 * se + 0.02)
    c_g, se_g = normalization_constant(dens, x, t_max=t_max, anchor="gaussian")
    assert abs(c_g) < 4 * se_g + 0.02


def test_one_shot_nll_of_the_truth_is_its_entropy(gen):
    d = 16
    dens = Gaussian.from_covariance(torch.diag(torch.linspace(0.01, 0.2, d, dtype=torch.float64)))
    x = dens.sample(20000, gen)
    r = one_shot_nll(Shifted(dens, -50.0), x, t=0.0, t_max=10.0, anchor="gaussian", batch_size=4096)
    assert r.nats_per_dim == pytest.approx(dens.entropy(0.0) / d, abs=0.005)
    assert r.quantization_bits is None  # continuous data: no +8
    assert r.bits_per_dim == pytest.approx(units.nats_to_bits(r.nats_per_dim))


def test_nll_at_positive_t_is_noisy_cross_entropy(gen):
    d = 16
    dens = Gaussian.from_covariance(torch.diag(torch.linspace(0.01, 0.2, d, dtype=torch.float64)))
    x = dens.sample(20000, gen)
    r = one_shot_nll(dens, x, t=0.05, constant=(0.0, 0.0), batch_size=4096)
    assert r.nats_per_dim == pytest.approx(dens.entropy(0.05) / d, abs=0.005)


def test_eight_bit_data_gets_plus_eight_bits(gen):
    x = (torch.rand(200, 1, 4, 4, generator=gen) * 255).to(torch.uint8)
    g = fit_anchor(x)
    r = one_shot_nll(g, x, t=0.0, constant=(0.0, 0.0))
    assert r.quantization_bits == 8
    assert r.bits_per_dim == pytest.approx(units.nats_to_bits(r.nats_per_dim) + 8)
    r_noisy = one_shot_nll(g, x, t=1e-3, constant=(0.0, 0.0))
    assert r_noisy.quantization_bits is None


def test_energies_do_not_depend_on_batch_size(gen):
    dens = gsm(8, (1.0, 4.0))
    x = dens.sample(50, gen).float()
    a = one_shot_nll(dens, x, t=0.3, constant=(0.0, 0.0), batch_size=7, return_per_image=True)[2]
    b = one_shot_nll(dens, x, t=0.3, constant=(0.0, 0.0), batch_size=50, return_per_image=True)[2]
    assert torch.equal(a, b)
