"""Samplers against exact densities: the same code that samples a network samples the closed forms here.

Statistics: for a Gaussian with known non-isotropic covariance, the likelihood-ratio test of the whitened
sample covariance (and mean) against the identity; for the Gaussian scale mixture in d = 1000, a KS test of
the radial distribution ||x||^2 / d against its exact CDF (a mixture of scaled chi-square laws). Seeds are
fixed, so every test is deterministic; the "detects" tests show the statistics do fail on wrong samples.
"""

import numpy as np
import pytest
import torch
from scipy import stats

from dsmctl.nn import densities
from dsmctl.sample import samplers as sampling
from dsmctl.sample.samplers import SamplerConfig

D_GAUSS = 16


def rotated_gaussian(d=D_GAUSS, scale=1.0):
    """N(mean, Q diag(1 ... 0.01) Q^T): a random rotation, eigenvalues log-spaced over two decades."""
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    vals = scale * torch.logspace(0, -2, d, dtype=torch.float64)
    mean = 0.5 + 0.1 * torch.randn(d, generator=g, dtype=torch.float64)
    return densities.Gaussian((d,), mean=mean, eigvecs=q, eigvals=vals, floor=0.0)


def gaussian_lrt_pvalue(x, gauss):
    """p-value of the likelihood-ratio test 'samples ~ N(mean, S)': with w the whitened samples and
    C = mean w w^T, n (tr C - log det C - d) is asymptotically chi-square with d (d + 3) / 2 dof
    (covariance and mean tested together, both known)."""
    w = (x.double() - gauss.mean) @ gauss.eigvecs / gauss.eigvals.sqrt()
    n, d = w.shape
    c = w.T @ w / n
    stat = n * (torch.trace(c) - torch.logdet(c) - d).item()
    return stats.chi2.sf(stat, d * (d + 3) / 2)


def gsm_ks(x, d=1000, variances=(1.0, 16.0)):
    r = (x.double().square().sum(1) / d).numpy()

    def cdf(v):
        return sum(stats.chi2.cdf(v * d / s, d) for s in variances) / len(variances)

    return stats.kstest(r, cdf)


def run(density, shape, n, dtype=torch.float64, **cfg):
    return sampling.sample(density, range(n), shape, SamplerConfig(**cfg), batch_size=n, dtype=dtype)


# Settings accurate enough for the test statistics, and cheap on the closed forms.
GAUSS_CFG = {
    "ode-heun": dict(sampler="ode", solver="heun", steps=40, t_max=1e2, t_min=1e-5),
    "ode-euler": dict(sampler="ode", solver="euler", steps=200, t_max=1e2, t_min=1e-5),
    "sde-heun": dict(sampler="sde", solver="heun", steps=100, t_max=1e2, t_min=1e-5),
    "ascent": dict(sampler="ascent", h0=0.02, beta=0.5, t_max=1e1, t_min=1e-5),
    "mala": dict(sampler="mala", steps=40, langevin_steps=2, step_scale=0.2, t_max=1e2, t_min=1e-5),
}
GSM_CFG = {
    "ode-heun": dict(sampler="ode", solver="heun", steps=100, t_max=1e3, t_min=1e-5),
    "sde-heun": dict(sampler="sde", solver="heun", steps=200, t_max=1e3, t_min=1e-5),
    # t_max = 1e3: at 1e2 the two components are already apart in radius (d = 1000), so the start
    # N(m, (t_max + v) I) would be wrong; the ODE transports that error, the ascent too
    "ascent": dict(sampler="ascent", h0=0.01, beta=0.5, t_max=1e3, t_min=1e-4),
    "mala": dict(sampler="mala", steps=40, langevin_steps=2, step_scale=0.1, t_max=1e3, t_min=1e-5),
}
GSM_SLOW = {"sde-heun", "ascent"}


def test_schedules_end_where_asked_and_decrease():
    for kind in ("log", "edm"):
        ts = sampling.t_schedule(1e3, 1e-5, 50, kind)
        assert len(ts) == 51 and ts[0].item() == 1e3 and ts[-1].item() == 1e-5
        assert (ts[1:] < ts[:-1]).all()


def test_initial_gaussian_reads_mean_and_variance_from_the_energy():
    g = rotated_gaussian()
    m, v = sampling.initial_gaussian(g, (D_GAUSS,), SamplerConfig(t_max=1e2), dtype=torch.float64)
    assert torch.allclose(m, g.mean, atol=0.04)  # error ~ S / sqrt(t_max n_probe), tiny next to sqrt(t_max)
    # ~ the mean data variance; 64 random probe directions in 16 dims see the spectrum with ~10% error
    assert v == pytest.approx(g.eigvals.mean().item(), rel=0.2)
    assert sampling.initial_gaussian(densities.gsm(1000), (1000,), SamplerConfig(t_max=1e3))[1] == pytest.approx(8.5, rel=0.06)
    m0, v0 = sampling.initial_gaussian(g, (D_GAUSS,), SamplerConfig(init="zero"), dtype=torch.float64)
    assert v0 == 0 and (m0 == 0).all()


@pytest.mark.parametrize("name", list(GAUSS_CFG))
def test_gaussian_covariance_matches(name):
    g = rotated_gaussian()
    out = run(g, (D_GAUSS,), 1000, **GAUSS_CFG[name])
    assert gaussian_lrt_pvalue(out["x"], g) > 1e-3


@pytest.mark.parametrize("name", [pytest.param(k, marks=pytest.mark.slow) if k in GSM_SLOW else k for k in GSM_CFG])
def test_gsm_radial_distribution_matches(name):
    out = run(densities.gsm(1000), (1000,), 300, dtype=torch.float32, **GSM_CFG[name])
    assert gsm_ks(out["x"]).pvalue > 0.01


def test_statistics_detect_wrong_energy_and_too_few_steps():
    g = rotated_gaussian()
    wrong = rotated_gaussian(scale=1.25)  # every variance 25% too large
    assert gaussian_lrt_pvalue(wrong.sample(1000, torch.Generator().manual_seed(1)), g) < 1e-6
    assert gaussian_lrt_pvalue(run(wrong, (D_GAUSS,), 1000, **GAUSS_CFG["ode-heun"])["x"], g) < 1e-6
    gsm = densities.gsm(1000)
    assert gsm_ks(run(gsm, (1000,), 300, dtype=torch.float32, **{**GSM_CFG["ode-heun"], "steps": 8})["x"]).pvalue < 1e-4
    wrong_gsm = densities.gsm(1000, weights=[0.7, 0.3])
    assert gsm_ks(run(wrong_gsm, (1000,), 300, dtype=torch.float32, **GSM_CFG["ode-heun"])["x"]).pvalue < 1e-4


def test_metropolis_hastings_removes_the_langevin_bias():
    """At one noise level, started from exact samples of p_t: large unadjusted steps inflate the variance
    (by 1/(1 - eps/(2 var)) for a Gaussian), MH-adjusted ones keep p_t exactly."""
    g = rotated_gaussian()
    t = 0.05
    noisy = densities.Gaussian((D_GAUSS,), mean=g.mean, eigvecs=g.eigvecs, eigvals=g.eigvals + t, floor=0.0)
    y0 = noisy.sample(1000, torch.Generator().manual_seed(2))
    ts = torch.tensor([t], dtype=torch.float64)
    seeds = range(1000)
    args = dict(n_steps=20, step_scale=0.8, predictor="none")
    # langevin returns D(y, t), whose law is N(mean, S^2 (S + t)^-1) when y ~ p_t
    y_ula, acc_ula = sampling.langevin(g, y0.clone(), ts, sampling.SeedNoise(seeds, 1), None, **args)
    y_mala, acc_mala = sampling.langevin(g, y0.clone(), ts, sampling.SeedNoise(seeds, 1),
                                         sampling.SeedNoise(seeds, 2), **args)
    exact = densities.Gaussian((D_GAUSS,), mean=g.mean, eigvecs=g.eigvecs,
                               eigvals=g.eigvals**2 / (g.eigvals + t), floor=0.0)  # law of D(y, t), y ~ p_t
    assert gaussian_lrt_pvalue(y_mala, exact) > 1e-3
    assert gaussian_lrt_pvalue(y_ula, exact) < 1e-6
    assert (acc_ula == 1).all() and 0.2 < acc_mala.mean() < 0.95


def test_gsm_unadjusted_langevin_gets_the_mixture_weights_wrong():
    """The annealed sampler with MH matches the GSM; the same steps without MH over-disperse at high noise
    and push samples into the wide component (measured in docs/sampling.md)."""
    gsm = densities.gsm(1000)
    ula = run(gsm, (1000,), 300, dtype=torch.float32, **{**GSM_CFG["mala"], "sampler": "ula"})
    frac_low = ((ula["x"].square().sum(1) / 1000) < 4).double().mean().item()
    assert frac_low < 0.3 and gsm_ks(ula["x"]).pvalue < 1e-4


@pytest.mark.parametrize("name", ["ode-heun", "sde-heun", "ascent", "mala"])
def test_same_image_whatever_the_batch(name):
    g = rotated_gaussian(d=8)
    cfg = SamplerConfig(**{**GAUSS_CFG[name], "steps": 6, "max_iters": 30, "h0": 0.2})
    seeds = [7, 3, 11, 0, 5]
    one = sampling.sample(g, seeds, (8,), cfg, batch_size=1, dtype=torch.float64)
    four = sampling.sample(g, seeds[::-1], (8,), cfg, batch_size=4, dtype=torch.float64)
    assert torch.allclose(one["x"], four["x"].flip(0), rtol=0, atol=1e-10)
    for key in ("accept", "iterations"):
        if key in one:
            assert torch.equal(one[key], four[key].flip(0))


def test_same_image_whatever_the_batch_on_a_network():
    from dsmctl.nn.build import build_model

    torch.manual_seed(0)
    model = build_model({"kind": "energy", "widths": (8, 16), "mid_width": 16, "layers_per_block": 2,
                         "embedding": "logt"}, (1, 16, 16)).eval()
    cfg = SamplerConfig(sampler="mala", steps=2, langevin_steps=1, t_max=10.0, t_min=1e-3)
    one = sampling.sample(model, [4, 1, 2], (1, 16, 16), cfg, batch_size=1)
    three = sampling.sample(model, [1, 2, 4], (1, 16, 16), cfg, batch_size=3)
    assert torch.allclose(one["x"][[1, 2, 0]], three["x"], atol=1e-5)


def test_bad_settings_are_refused():
    for bad in (dict(sampler="nope"), dict(solver="rk4"), dict(t_min=10.0, t_max=1.0), dict(steps=0),
                dict(beta=0.0), dict(noise_estimate="guess"), dict(predictor="gibbs")):
        with pytest.raises(ValueError):
            SamplerConfig(**bad).check()


def test_acceptance_falls_with_the_step_size():
    gsm = densities.gsm(1000)
    rates = [sampling.acceptance_per_level(run(gsm, (1000,), 50, dtype=torch.float32, sampler="mala", steps=5,
                                               langevin_steps=2, step_scale=s, t_max=1e2, t_min=1e-2)["accept"])
             for s in (0.05, 0.5)]
    assert np.mean(rates[0]) > np.mean(rates[1])
