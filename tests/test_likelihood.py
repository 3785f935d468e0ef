"""Normalization constant and one-shot NLL, checked on closed-form densities."""

import math

import numpy as np
import pytest
import torch

from dsmctl.nn.densities import Gaussian, gsm
from dsmctl.nn.output import EnergyOutput, as_batch_t
from dsmctl.nll.likelihood import fit_anchor, normalization_constant, one_shot_nll

# Written out, not imported: the tests below must not share the implementation's constants.
LN2 = 0.6931471805599453
LN10 = 2.302585092994046


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
    assert r.bits_per_dim == pytest.approx(dens.entropy(0.0) / (d * LN2), abs=0.005 / LN2)


def test_nll_at_positive_t_is_noisy_cross_entropy(gen):
    d = 16
    dens = Gaussian.from_covariance(torch.diag(torch.linspace(0.01, 0.2, d, dtype=torch.float64)))
    x = dens.sample(20000, gen)
    r = one_shot_nll(dens, x, t=0.05, constant=(0.0, 0.0), batch_size=4096)
    assert r.nats_per_dim == pytest.approx(dens.entropy(0.05) / d, abs=0.005)


class ConstantEnergy:
    """U(y, t) = value for every y: with value 0, the uniform density on [0, 1]^d (its integral is 1)."""

    def __call__(self, y, t, need=("energy",), create_graph=False):
        out = EnergyOutput(y, as_batch_t(t, y))
        out.energy = torch.zeros(y.shape[0], dtype=torch.float64)
        return out


def gaussian_energy(x, mean, variances):
    """-log N(x; mean, diag(variances)) per image, in nats, written out from the formula (float64)."""
    r = x.reshape(len(x), -1).double() - mean
    return 0.5 * (r * r / variances).sum(1) + 0.5 * torch.log(2 * math.pi * variances).sum()


def test_uniform_density_on_8_bit_images_is_exactly_8_bits_per_dim(gen):
    """256 equally likely levels per pixel: 8 bits/dim, whatever the images. Pins the +8 (not log2(255), not 0)."""
    x = (torch.rand(50, 1, 4, 4, generator=gen) * 256).to(torch.uint8)
    r = one_shot_nll(ConstantEnergy(), x, t=0.0, constant=(0.0, 0.0))
    assert r.quantization_bits == 8
    assert r.bits_per_dim == 8.0 and r.nats_per_dim == 0.0 and r.log_p_db_per_dim == 0.0
    # A constant c = d ln 2 / 2 halves each pixel's probability: 8.5 bits/dim.
    d = 16
    r = one_shot_nll(ConstantEnergy(), x, t=0.0, constant=(0.5 * d * LN2, 0.0))
    assert r.bits_per_dim == pytest.approx(8.5, abs=1e-12)
    # Continuous data (floats) gets no +8; noisy 8-bit data at t > 0 is continuous too.
    assert one_shot_nll(ConstantEnergy(), x.float() / 255, t=0.0, constant=(0.0, 0.0)).bits_per_dim == 0.0
    r_noisy = one_shot_nll(ConstantEnergy(), x, t=1e-3, constant=(0.0, 0.0))
    assert r_noisy.quantization_bits is None and r_noisy.bits_per_dim == 0.0


@pytest.mark.parametrize("eight_bit", [False, True])
def test_bits_per_dim_of_a_gaussian_model_equals_the_closed_form(gen, eight_bit):
    """NLL = 8 + mean_x[-log N(x; mu, diag v)] / (d ln 2) on 8-bit images (no +8 on floats), computed here
    from the Gaussian formula with ln 2 and ln 10 as literals; also nats/dim and dB/dim."""
    d = 16
    variances = torch.linspace(0.01, 0.2, d, dtype=torch.float64)
    mean = torch.linspace(0.3, 0.7, d, dtype=torch.float64)
    model = Gaussian.from_covariance(torch.diag(variances), mean=mean, shape=(1, 4, 4))
    raw = torch.rand(300, 1, 4, 4, generator=gen)
    if eight_bit:
        data = (raw * 256).to(torch.uint8)
        x = torch.from_numpy(data.numpy().astype(np.float32) / 255)  # what the loader feeds the model
    else:
        data = x = raw
    per_image = gaussian_energy(x, mean, variances)
    expected = per_image.mean().item() / (d * LN2) + (8 if eight_bit else 0)
    r = one_shot_nll(model, data, t=0.0, constant=(0.0, 0.0))
    assert r.bits_per_dim == pytest.approx(expected, rel=2e-6, abs=2e-6)
    assert r.nats_per_dim == pytest.approx(per_image.mean().item() / d, rel=2e-6, abs=2e-6)
    assert r.log_p_db_per_dim == pytest.approx(-10 * per_image.mean().item() / (d * LN10), rel=2e-6, abs=2e-6)
    # With a constant: every image shifts by c nats, bits/dim by c / (d ln 2).
    r_c = one_shot_nll(model, data, t=0.0, constant=(7.0, 0.0))
    assert r_c.bits_per_dim == pytest.approx(expected + 7.0 / (d * LN2), rel=2e-6, abs=2e-6)


def test_energies_do_not_depend_on_batch_size(gen):
    dens = gsm(8, (1.0, 4.0))
    x = dens.sample(50, gen).float()
    a = one_shot_nll(dens, x, t=0.3, constant=(0.0, 0.0), batch_size=7, return_per_image=True)[2]
    b = one_shot_nll(dens, x, t=0.3, constant=(0.0, 0.0), batch_size=50, return_per_image=True)[2]
    assert torch.equal(a, b)


@pytest.mark.parametrize("anchor", ["paper", "gaussian"])
def test_both_constant_paths_give_the_written_out_formula(anchor):
    """The constant of eval-nll (likelihood.normalization_constant) and of training's end (engine/dist_eval.py, one
    process here; two in test_distributed.py) against the formula written out in tests/reference.py:
    paper c = (d/2) log(2 pi e t_max) - mean U(y, t_max); gaussian c = mean [G(y) - U(y, t_max)]."""
    import reference
    from dsmctl.data import open_split
    from dsmctl.engine import dist_eval

    data = open_split("demo", "test").subset(np.arange(30))
    _, x = reference.images(30)
    model = Shifted(Gaussian.isotropic(x.shape[1:], 0.3, mean=torch.full((x[0].numel(),), 0.4)), 17.5)
    t_max = 10.0
    want = (reference.paper_anchor_constant if anchor == "paper" else reference.gaussian_anchor_constant)(model, x, t_max)
    single = normalization_constant(model, data, t_max, anchor, batch_size=7, seed=0)
    dist = dist_eval.normalization_constant(None, model, data, t_max, anchor, 11, 0)
    for c, se in (single, dist):
        assert c == pytest.approx(want[0], abs=1e-4) and se == pytest.approx(want[1], rel=1e-3)
