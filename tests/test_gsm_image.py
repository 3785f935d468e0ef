"""The image-like Gaussian scale mixture (densities.gsm_image, preset synthetic:gsm16) against independent
computations: scipy's DCT and multivariate normal, sample moments, the heat equation, and the NLL numbers
quoted in docs/validation.md ("Synthetic image-like testbed: gsm16")."""
import math

import numpy as np
import pytest
import scipy.fft
import scipy.special
import scipy.stats
import torch

from dsmctl.data import open_split, true_density
from dsmctl.data.sources import PRESETS
from dsmctl.nn.densities import dct2_basis, from_spec, mixture_entropy, moment_matched

SPEC = {k: v for k, v in PRESETS["gsm16"].items() if k not in ("n_train", "n_test", "seed")}
SMALL = {**SPEC, "size": 4}  # d = 16: dense covariances, exact Laplacians

# docs/validation.md, gsm16 section: entropies at t = 0 in nats/dim
TRUE_NATS, GAUSS_NATS, GAP_NATS = -1.41669, -1.21273, 0.20396


def reference_covariances(spec):
    """Per-component covariances built without dsmctl: basis images from scipy's inverse DCT, the power
    law written out, scaled so that the mean pixel variance is pixel_std²."""
    n, e, f0 = spec["size"], spec["spectrum_exponent"], spec["f0"]
    v, w = np.array(spec["variances"]), np.array(spec["weights"]) / np.sum(spec["weights"])
    rows, power = [], []
    for k1 in range(n):
        for k2 in range(n):
            coef = np.zeros((n, n))
            coef[k1, k2] = 1.0
            rows.append(scipy.fft.idctn(coef, type=2, norm="ortho").ravel())
            power.append((f0 ** 2 + (k1 / (2 * n)) ** 2 + (k2 / (2 * n)) ** 2) ** (-e / 2))
    b, power = np.array(rows), np.array(power)
    c = b.T @ np.diag(power) @ b
    c *= spec["pixel_std"] ** 2 / ((w * v).sum() * np.trace(c) / n ** 2)
    return [vk * c for vk in v], w


def test_dct_basis_is_orthonormal_and_is_scipys_dct():
    v = dct2_basis(16)
    eye = torch.eye(256, dtype=torch.float64)
    assert (v.T @ v - eye).abs().max() < 1e-12
    assert (v @ v.T - eye).abs().max() < 1e-12
    x = np.random.default_rng(0).normal(size=(16, 16))
    coef = (torch.as_tensor(x.ravel()) @ v).numpy()  # coefficients in the basis
    assert np.abs(coef - scipy.fft.dctn(x, type=2, norm="ortho").ravel()).max() < 1e-12


def test_sample_moments_match_the_closed_form():
    """20,000 samples: mean and covariance (in the DCT basis) within 5-6 standard errors of the reference,
    the standard errors computed from the GSM's own fourth moments."""
    dens = from_spec(SPEC)
    n = 20_000
    x = dens.sample(n, torch.Generator().manual_seed(0)).reshape(n, -1)
    covs, w = reference_covariances(SPEC)
    mom = sum(wk * ck for wk, ck in zip(w, covs))
    assert np.trace(mom) / 256 == pytest.approx(SPEC["pixel_std"] ** 2, rel=1e-12)
    z_mean = (x.mean(0).numpy() - SPEC["mean"]) / np.sqrt(np.diag(mom) / n)
    assert np.abs(z_mean).max() < 5, np.abs(z_mean).max()
    v = dct2_basis(16)
    c = ((x - SPEC["mean"]) @ v).numpy()  # coefficients, independent given s
    lam = np.array([np.diag(v.numpy().T @ ck @ v.numpy()) for ck in covs])  # (K, d) component variances
    assert np.abs(v.numpy().T @ covs[0] @ v.numpy() - np.diag(lam[0])).max() < 1e-12  # diagonal in the DCT basis
    m2 = (w[:, None] * lam).sum(0)
    var_c2 = 3 * (w[:, None] * lam ** 2).sum(0) - m2 ** 2
    z_diag = ((c ** 2).mean(0) - m2) / np.sqrt(var_c2 / n)
    assert np.abs(z_diag).max() < 5, np.abs(z_diag).max()
    e_c2c2 = np.einsum("k,ki,kj->ij", w, lam, lam)  # E[c_i² c_j²] = E[c_i c_j · c_i c_j] for i != j
    off = (c.T @ c / n) / np.sqrt(e_c2c2 / n)
    np.fill_diagonal(off, 0)
    assert np.abs(off).max() < 6, np.abs(off).max()  # 32,640 pairs: a normal max is about 4.5


def test_energy_is_the_mixture_log_density():
    """At d = 16 against scipy's multivariate normal on the reference covariances + tI."""
    dens = from_spec(SMALL)
    covs, w = reference_covariances(SMALL)
    rng = np.random.default_rng(1)
    for t in (0.0, 1e-3, 0.3):
        y = dens.sample(6, torch.Generator().manual_seed(2)).reshape(6, -1).numpy() + rng.normal(size=(6, 16)) * 0.1
        ref = -scipy.special.logsumexp([np.log(wk) + scipy.stats.multivariate_normal(
            np.full(16, SMALL["mean"]), ck + t * np.eye(16)).logpdf(y) for wk, ck in zip(w, covs)], axis=0)
        u = dens(torch.as_tensor(y).reshape(6, 1, 4, 4), t).energy.numpy()
        assert np.abs(u - ref).max() < 1e-9 * np.abs(ref).max(), (t, u, ref)


def test_energy_solves_the_heat_equation():
    """dU/dt = ½ΔU − ½|∇U|², with ∇U and ΔU by autograd of the energy (exact), at d = 16; the closed-form
    grad_t and grad_y match, and so does a finite difference of the energy in t."""
    dens = from_spec(SMALL)
    g = torch.Generator().manual_seed(3)
    n = 5
    y = (dens.sample(n, g) + 0.2 * torch.randn(n, 1, 4, 4, generator=g, dtype=torch.float64)).requires_grad_(True)
    t = torch.tensor([1e-4, 1e-3, 1e-2, 0.1, 2.0], dtype=torch.float64)
    u = dens(y, t).energy
    grad = torch.autograd.grad(u.sum(), y, create_graph=True)[0].reshape(n, -1)
    lap = sum(torch.autograd.grad(grad[:, i].sum(), y, retain_graph=True)[0].reshape(n, -1)[:, i] for i in range(16))
    rhs = 0.5 * lap - 0.5 * (grad ** 2).sum(1)
    out = dens(y.detach(), t, need=("energy", "grad_y", "grad_t"))
    assert torch.allclose(out.grad_y.reshape(n, -1), grad.detach(), rtol=1e-10, atol=1e-10)
    assert torch.allclose(out.grad_t, rhs.detach(), rtol=1e-9, atol=1e-9), (out.grad_t, rhs)
    h = 1e-6 * t
    fd = (dens(y.detach(), t + h).energy - dens(y.detach(), t - h).energy) / (2 * h)
    assert torch.allclose(fd, rhs.detach(), rtol=1e-5), (fd, rhs)


def test_preset_loads_as_continuous_images():
    train = open_split("synthetic:gsm16", "train")
    test = open_split("synthetic:gsm16", "test")
    assert (len(train), len(test), tuple(train.shape)) == (50_000, 2_000, (1, 16, 16))
    x = np.asarray(test.array)
    assert x.dtype == np.float32 and len(np.unique(x)) > 0.9 * x.size  # not quantized
    assert 0.9 < ((x >= 0) & (x <= 1)).mean() < 1
    truth = true_density("synthetic:gsm16")
    assert truth.shape == (1, 16, 16) and len(truth.components) == 2


def test_true_and_gaussian_nll_are_the_documented_numbers():
    """Entropy of the mixture (stratified, its sampled part is 0 here: the components are separated) and of
    the moment-matched Gaussian; checked against a plain Monte Carlo estimate of the paired gap."""
    dens = from_spec(SPEC)
    gauss = moment_matched(dens)
    d = dens.d
    h, se = mixture_entropy(dens, 0.0, 5_000, torch.Generator().manual_seed(4))
    assert abs(h / d - TRUE_NATS) < 5e-5 + 4 * se / d
    assert abs(gauss.entropy(0.0) / d - GAUSS_NATS) < 5e-5
    assert abs((gauss.entropy(0.0) - h) / d - GAP_NATS) < 5e-5 + 4 * se / d
    x = dens.sample(40_000, torch.Generator().manual_seed(5))
    diff = (gauss(x, 0.0).energy - dens(x, 0.0).energy) / d  # cross-entropy − entropy = KL, per image
    se_mc = diff.std().item() / math.sqrt(len(diff))
    assert abs(diff.mean().item() - GAP_NATS) < 4 * se_mc, (diff.mean().item(), se_mc)
