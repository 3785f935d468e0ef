"""Samplers driven by the energy: every step reads D(y, t) = y - t grad_y U(y, t), and MALA reads U itself.

t is the per-pixel noise variance and sigma = sqrt(t). Any model answering model(y, t, need=...) works:
the networks and the closed forms of nn/densities.py, so the tests run the exact energy through this code.

  ode     probability-flow ODE dy/dsigma = (y - D)/sigma; Euler (= DDIM) or Heun steps in sigma
  sde     reverse SDE dy = 2 (y - D)/sigma dsigma + sqrt(2 sigma |dsigma|) dw; Euler (= ancestral) or Heun
  ascent  stochastic coarse-to-fine ascent (Kadkhodaie & Simoncelli 2021): y += h (D - y) + noise
  mala    annealed Langevin (a probability-flow step between levels, Langevin steps at each), every
          Langevin proposal accepted or rejected by Metropolis-Hastings on U(., t_k)
  ula     the same Langevin steps without the accept/reject test (unadjusted), for comparison

Every sampler ends with the denoised D(y, t_last). Every random number of a sample comes from generators
seeded by (seed, stream) and drawn in a fixed order per step, so a sample depends on its seed only: not on
the batch size, its place in the batch or the number of processes.
"""
import math
from dataclasses import asdict, dataclass

import torch

from ..rng import hash_seed

SAMPLERS = ("ode", "sde", "ascent", "mala", "ula")
SOLVERS = ("euler", "heun")
SCHEDULES = ("auto", "log", "edm")
INIT_STREAM, STEP_STREAM, ACCEPT_STREAM, PROBE_STREAM = 101, 102, 103, 104


@dataclass
class SamplerConfig:
    sampler: str = "ode"
    solver: str = "heun"  # ode / sde: euler | heun
    steps: int = 100  # ode / sde: steps; mala / ula: noise levels
    t_max: float = 1e3  # start (a model should have been trained up to it)
    t_min: float = 1e-4  # last noise level; the output is D(y, t_min)
    schedule: str = "auto"  # log: t log-spaced | edm: sigma^(1/rho) evenly spaced (Karras et al. 2022) |
    #                         auto: edm for ode/sde (fewer steps for the same error), log for mala/ula levels
    rho: float = 7.0
    init: str = "model"  # start N(m, (t_max + v) I): model: m, v the model's own estimates | zero: N(0, t_max I) |
    #                      data: m, v the data's mean image and mean variance, passed to sample(start=...)
    h0: float = 0.01  # ascent: step size h (constant), or the first one of the paper's schedule
    h_schedule: str = "constant"  # ascent: constant | paper (h_k = h0 k / (1 + h0 (k - 1)), rising to 1)
    beta: float = 0.5  # ascent: noise injection; 1 = none (then a deterministic flow), small = more
    noise_estimate: str = "schedule"  # ascent: schedule | residual (the paper's ||D - y||^2 / d) | time-score
    max_iters: int = 5000  # ascent: cap on iterations
    langevin_steps: int = 10  # mala / ula: steps per noise level
    step_scale: float = 0.1  # mala / ula: Langevin step size eps_k = step_scale * t_k
    predictor: str = "ode"  # mala / ula: step between levels: ode | sde (Heun steps) | none (pure annealing)

    def check(self):
        def need(ok, what):
            if not ok:
                raise ValueError(what)

        need(self.sampler in SAMPLERS, f"sampler {self.sampler!r}: expected one of {', '.join(SAMPLERS)}")
        need(self.solver in SOLVERS, f"solver {self.solver!r}: expected euler or heun")
        need(self.schedule in SCHEDULES, f"schedule {self.schedule!r}: expected auto, log or edm")
        if self.schedule == "auto":
            self.schedule = "edm" if self.sampler in ("ode", "sde") else "log"
        need(self.init in ("model", "zero", "data"), f"init {self.init!r}: expected model, zero or data")
        need(self.h_schedule in ("constant", "paper"), f"h schedule {self.h_schedule!r}: expected constant or paper")
        need(self.noise_estimate in ("time-score", "residual", "schedule"), f"noise estimate {self.noise_estimate!r}: "
             "expected time-score, residual or schedule")
        need(self.predictor in ("ode", "sde", "none"), f"predictor {self.predictor!r}: expected ode, sde or none")
        need(self.steps >= 1, f"steps {self.steps}: expected at least 1")
        need(0 < self.t_min < self.t_max, f"t_min {self.t_min:g}, t_max {self.t_max:g}: expected 0 < t_min < t_max")
        need(0 < self.h0 <= 1, f"h0 {self.h0:g}: expected a step size in (0, 1]")
        need(0 < self.beta <= 1, f"beta {self.beta:g}: expected a value in (0, 1]")
        need(self.langevin_steps >= 1, f"langevin steps {self.langevin_steps}: expected at least 1")
        need(self.step_scale > 0, f"step scale {self.step_scale:g}: expected a positive number")
        return self

    def to_dict(self):
        return asdict(self)


def t_schedule(t_max, t_min, steps, kind="log", rho=7.0):
    """steps + 1 noise variances from t_max down to t_min (float64)."""
    if kind == "log":
        return torch.logspace(math.log10(t_max), math.log10(t_min), steps + 1, dtype=torch.float64)
    a, b = t_max ** (0.5 / rho), t_min ** (0.5 / rho)
    ts = (a + torch.linspace(0, 1, steps + 1, dtype=torch.float64) * (b - a)) ** (2 * rho)
    ts[0], ts[-1] = t_max, t_min  # exact ends despite rounding
    return ts


class SeedNoise:
    """One generator per sample, seeded by (seed, stream): draws depend on the seed alone, never on the batch.

    Each generator fills `chunk` draws at a time (a fixed number, so the values do not depend on the batch
    either); this keeps the per-sample Python loop off the critical path. All rows asked for in one call
    must be at the same position in their streams (true for samplers that step every live sample at once).
    """

    def __init__(self, seeds, stream, chunk=16):
        self.gens = [torch.Generator().manual_seed(hash_seed(s, stream)) for s in seeds]
        self.chunk, self.buf, self.pos = chunk, None, chunk

    def _draw(self, fn, shape, rows):
        every = rows is None or torch.equal(rows.cpu(), torch.arange(len(self.gens)))
        rows = list(range(len(self.gens))) if every else rows.tolist()
        if self.pos == self.chunk:  # refill: (chunk, rows, *shape), so one step's draws are one slice
            fresh = torch.stack([fn((self.chunk, *shape), generator=self.gens[i]) for i in rows], 1)
            if every:
                self.buf = fresh
            else:
                if self.buf is None:
                    self.buf = torch.empty(self.chunk, len(self.gens), *fresh.shape[2:])
                self.buf[:, rows] = fresh
            self.pos = 0
        self.pos += 1
        return self.buf[self.pos - 1] if every else self.buf[self.pos - 1, rows]

    def normal(self, like, rows=None):
        """N(0, I) shaped like one row of `like`, for each sample (or the samples at index `rows`)."""
        return self._draw(torch.randn, like.shape[1:], rows).to(like)

    def uniform(self, like):
        return self._draw(torch.rand, (), None).to(like)


def expand(t, y):
    return t.reshape(-1, *([1] * (y.dim() - 1)))


def denoise(model, y, t):
    return model(y, t, need=("grad_y",)).denoised.detach()


@torch.no_grad()
def initial_gaussian(model, shape, cfg, batch_size=64, device=None, dtype=torch.float32, n_probe=64):
    """(m, v): mean image and extra per-dim variance of the start distribution N(m, (t_max + v) I).

    At t_max the noisy density is close to N(mean, (t_max + var) I), and the model should know both: the
    denoiser returns the data mean up to O(var / t_max), and the time score gives the variance: for
    y = m + sqrt(t) z, E[dU/dt] = (d/2) v / (t + v)^2 if p_t = N(m, (t + v) I); solved for v. Probes are
    fixed draws (independent of the seeds), so every process and batch size gets the same (m, v); each is
    rescaled to ||z||^2 = d, which removes the chi-square spread of ||z||^2 (relative sqrt(2 / d) per probe,
    as large as v / t itself) from the estimate. (The paper's UNet subtracts each channel's mean in its
    norm layers, so it barely sees an image's mean brightness: for it, pass the data's (m, v) instead.)
    """
    zero = torch.zeros(shape, dtype=dtype, device=device)
    if cfg.init == "zero":
        return zero, 0.0
    t, d = cfg.t_max, math.prod(shape)
    probes = [SeedNoise([j], PROBE_STREAM, chunk=1) for j in range(n_probe)]

    def probe(rows):
        z = torch.cat([probes[j].normal(zero[None]) for j in rows.tolist()])
        return z * math.sqrt(d) / expand(z.flatten(1).norm(dim=1), z)

    mean, grad_t = torch.zeros(shape, dtype=torch.float64, device=device), 0.0
    batch_size = max(batch_size, 16)
    for start in range(0, n_probe, batch_size):
        rows = torch.arange(start, min(start + batch_size, n_probe))
        y = math.sqrt(t) * probe(rows)
        mean += denoise(model, y, t).double().sum(0)
    mean /= n_probe
    try:
        for start in range(0, n_probe, batch_size):
            rows = torch.arange(start, min(start + batch_size, n_probe))
            y = mean.to(dtype) + math.sqrt(t) * probe(rows)
            grad_t += model(y, t, need=("grad_t",)).grad_t.double().sum().item()
    except ValueError:  # a denoiser (score) model has no time score: keep v = 0
        return mean.to(dtype), 0.0
    a = 2 * grad_t / n_probe / d  # = v / (t + v)^2; smaller root of a v^2 + (2at - 1) v + a t^2 = 0
    if a <= 0:
        return mean.to(dtype), 0.0
    disc = max(1 - 4 * a * t, 0.0)
    return mean.to(dtype), ((1 - 2 * a * t) - math.sqrt(disc)) / (2 * a)


def ode(model, y, ts, solver="heun", progress=None):
    """Probability-flow ODE dy/dsigma = (y - D(y, sigma^2)) / sigma from ts[0] down to ts[-1]; see ode_step."""
    for k in range(len(ts) - 1):
        y = ode_step(model, y, ts[k].item(), ts[k + 1].item(), solver)
        if progress:
            progress((k + 1) / (len(ts) - 1))
    return denoise(model, y, ts[-1].item())


def ode_step(model, y, t, t_next, solver="heun"):
    """One step in sigma (Karras et al. 2022), where the drift is nearly constant: Euler is
    y' = D + (s'/s)(y - D) (DDIM); Heun averages the drift at both ends of the step."""
    s, s_next = math.sqrt(t), math.sqrt(t_next)
    drift = (y - denoise(model, y, t)) / s
    y_next = y + (s_next - s) * drift
    if solver == "heun":
        drift_next = (y_next - denoise(model, y_next, t_next)) / s_next
        y_next = y + (s_next - s) * 0.5 * (drift + drift_next)
    return y_next


def sde(model, y, ts, noise, solver="heun", progress=None):
    """Reverse SDE dy = 2 (y - D)/sigma dsigma + sqrt(2 sigma |dsigma|) dw (sigma decreasing); see sde_step."""
    for k in range(len(ts) - 1):
        y = sde_step(model, y, ts[k].item(), ts[k + 1].item(), noise, solver)
        if progress:
            progress((k + 1) / (len(ts) - 1))
    return denoise(model, y, ts[-1].item())


def sde_step(model, y, t, t_next, noise, solver="heun"):
    """One reverse-SDE step from t to t_next < t.

    For a fixed D the SDE is linear in y, so that part is integrated exactly (exponential integrator):
    Euler is y' = D + r (y - D) + sqrt(t' (1 - r)) z with r = t'/t, the variance-exploding ancestral
    step, exact when the data are pure noise or noise-free. Heun repeats the step with D replaced by the
    mean of D(y, t) and D(y_euler, t'), with the same noise draw. The noise re-randomizes the path, so
    errors made early are partly forgotten (unlike the ODE), but in high dimension a stochastic sampler
    needs more steps than the ODE for the same accuracy (docs/sampling.md).
    """
    r = t_next / t
    dw = math.sqrt(t_next * (1 - r)) * noise.normal(y)
    den = denoise(model, y, t)
    y_next = den + r * (y - den) + dw
    if solver == "heun":
        den = 0.5 * (den + denoise(model, y_next, t_next))
        y_next = den + r * (y - den) + dw
    return y_next


def ascent(model, y, t0, t_stop, noise, h0=0.01, beta=0.5, noise_estimate="schedule", max_iters=5000,
           h_schedule="constant", progress=None):
    """Stochastic coarse-to-fine ascent (Kadkhodaie & Simoncelli 2021, Algorithm 1), per sample:

        d = D(y, t) - y,  sigma^2 = the noise variance of y,  gamma^2 = ((1 - beta h)^2 - (1 - h)^2) sigma^2,
        y <- y + h d + gamma z,
    so that the noise variance shrinks by (1 - beta h)^2 per step; stop once sigma^2 < t_stop and return
    D(y, t) of the last iterate. The paper's step h_k = h0 k / (1 + h0 (k - 1)) rises to 1 (h_schedule
    "paper"): fast, but for a Gaussian each step loses ~h^2 t lam / (lam + t) of the variance of a
    direction of variance lam, and the samples come out over-smoothed (variance ratio ~0.5-0.8, see
    docs/sampling.md). A constant small h (default) is a consistent sampler: variance ratio ~1 - h/2.
    The paper's denoiser is blind; ours takes t, and sigma^2 (also the t given to D) is either
      schedule:   the planned level t_k = t0 (1 - beta h)^(2k) (default; the only choice that passed the
                  covariance and GSM tests),
      residual:   ||d||^2 / dim, the paper's estimate; it misses the posterior variance, so it under-
                  estimates the noise wherever the noise is below the signal, and the samples stay noisy,
      time-score: t - 2 t^2 dU/dt / dim, the posterior mean of ||y - x||^2 / dim given y (the identity the
                  time-score term of dual score matching trains): unbiased, but its per-sample spread
                  (~sqrt(2 / dim) relative) perturbs D in low dimension;
    with the estimated forms, the next t is the estimate times the planned decay (1 - beta h)^2.
    """
    n, dim = y.shape[0], y[0].numel()
    t = torch.full((n,), float(t0), dtype=y.dtype, device=y.device)
    out = torch.empty_like(y)
    active = torch.arange(n)  # rows of the samples still running; y and t hold only those
    iters = torch.zeros(n, dtype=torch.long)
    need = ("grad_y", "grad_t") if noise_estimate == "time-score" else ("grad_y",)
    log_span = math.log(t0 / t_stop)
    for k in range(1, max_iters + 1):
        res = model(y, t, need=need)
        den = res.denoised.detach()
        d = den - y
        if noise_estimate == "time-score":
            sigma2 = (t - 2 * t * t * res.grad_t.detach() / dim).clamp_min(0)
        elif noise_estimate == "residual":
            sigma2 = d.flatten(1).square().mean(1)
        else:
            sigma2 = t  # the schedule: t was set to the planned level below
        done = (sigma2 < t_stop) | (k == max_iters)
        if done.any():
            out[active[done.cpu()].to(out.device)] = den[done]
            iters[active[done.cpu()]] = k
            keep = ~done
            if not keep.any():
                break
            active, y, d, sigma2 = active[keep.cpu()], y[keep], d[keep], sigma2[keep]
        h = h0 * k / (1 + h0 * (k - 1)) if h_schedule == "paper" else h0
        gamma = (((1 - beta * h) ** 2 - (1 - h) ** 2) * sigma2).sqrt()
        z = noise.normal(y, active)
        y = y + h * d + expand(gamma, z) * z
        t = (1 - beta * h) ** 2 * sigma2.clamp_min(t_stop * 1e-3)
        if progress:
            progress(min(1.0, max(0.0, math.log(t0 / max(t.max().item(), 1e-300)) / log_span)))
    return out, iters


def langevin(model, y, ts, noise, accept_noise=None, n_steps=10, step_scale=0.1, predictor="ode", progress=None):
    """Annealed Langevin over the levels ts: at each t_k, n_steps proposals y' = y - eps grad U + sqrt(2 eps) z
    with eps = step_scale t_k.

    With accept_noise (MALA) each proposal is accepted with probability
    min(1, exp(-U(y', t_k)) q(y | y') / (exp(-U(y, t_k)) q(y' | y))), so every level leaves p_{t_k} exactly
    invariant; without it (ULA) every proposal is taken and the chain is biased by O(eps).
    Langevin steps of size ~t_k barely move directions whose data variance is much larger than t_k, so
    they cannot remove by themselves the noise left from the previous level (pure annealed Langevin, as in
    Song & Ermon 2019, keeps about t_(k-1) - t_k of it per level in those directions: predictor="none").
    predictor="ode" (or "sde") first moves from t_(k-1) to t_k with one Heun step of the probability-flow ODE
    (or of the reverse SDE), then corrects with the Langevin steps: a predictor-corrector sampler (Song et
    al. 2021) whose corrector is MH-adjusted. The ODE step is the more accurate per step of the two.
    Returns (D(y, t_last), accepted fraction per sample and level (B, levels)).
    """
    mh = accept_noise is not None
    need = ("energy", "grad_y") if mh else ("grad_y",)
    accepted = torch.zeros(y.shape[0], len(ts), dtype=torch.float64)
    for k, t in enumerate(ts.tolist()):
        if k and predictor == "sde":
            y = sde_step(model, y, ts[k - 1].item(), t, noise, "heun")
        elif k and predictor == "ode":
            y = ode_step(model, y, ts[k - 1].item(), t, "heun")
        eps = step_scale * t
        cur = model(y, t, need=need)
        u, g = (cur.energy.detach() if mh else None), cur.grad_y.detach()
        for _ in range(n_steps):
            z = noise.normal(y)
            prop = y - eps * g + math.sqrt(2 * eps) * z
            if not mh:
                y, g = prop, model(prop, t, need=need).grad_y.detach()
                continue
            log_u = accept_noise.uniform(u).log()
            new = model(prop, t, need=need)
            u_new, g_new = new.energy.detach(), new.grad_y.detach()
            # log q(y | y') - log q(y' | y) for the Gaussian proposals in the two directions
            back = (y - prop + eps * g_new).flatten(1).square().sum(1)
            fwd = (prop - y + eps * g).flatten(1).square().sum(1)
            ok = log_u < u - u_new - (back - fwd) / (4 * eps)
            y = torch.where(expand(ok, y), prop, y)
            g = torch.where(expand(ok, g), g_new, g)
            u = torch.where(ok, u_new, u)
            accepted[:, k] += ok.double().cpu() / n_steps
        if progress:
            progress((k + 1) / len(ts))
    if not mh:
        accepted.fill_(1.0)
    return denoise(model, y, ts[-1].item()), accepted


def sample_batch(model, seeds, shape, cfg, start, progress=None):
    """Samples for `seeds` from the start distribution `start` = (m, v); returns a dict of CPU tensors."""
    m, v = start
    init = SeedNoise(seeds, INIT_STREAM, chunk=1)
    noise = SeedNoise(seeds, STEP_STREAM)
    y = m + math.sqrt(cfg.t_max + v) * init.normal(m.expand(len(seeds), *shape))
    ts = t_schedule(cfg.t_max, cfg.t_min, cfg.steps, cfg.schedule, cfg.rho)
    extra = {}
    if cfg.sampler == "ode":
        x = ode(model, y, ts, cfg.solver, progress)
    elif cfg.sampler == "sde":
        x = sde(model, y, ts, noise, cfg.solver, progress)
    elif cfg.sampler == "ascent":
        x, extra["iterations"] = ascent(model, y, cfg.t_max, cfg.t_min, noise, cfg.h0, cfg.beta,
                                        cfg.noise_estimate, cfg.max_iters, cfg.h_schedule, progress)
    else:
        accept_noise = SeedNoise(seeds, ACCEPT_STREAM) if cfg.sampler == "mala" else None
        x, accept = langevin(model, y, ts, noise, accept_noise, cfg.langevin_steps, cfg.step_scale,
                             cfg.predictor, progress)
        if cfg.sampler == "mala":
            extra["accept"] = accept
    return {"x": x.detach().cpu(), **{k: v.cpu() for k, v in extra.items()}}


def sample(model, seeds, shape, cfg, batch_size=64, device=None, dtype=torch.float32, clip=False, progress=None,
           on_batch=None, start=None):
    """Draw one sample per seed. Returns {"x": (N, *shape), "ts": schedule, "start": (m, v), and
    "accept" (N, levels) for mala or "iterations" (N,) for ascent}. clip: clamp to [0, 1] (images).
    progress(fraction) is called as steps complete; on_batch(seeds, batch_dict) after each batch.
    start = (m, v): the start distribution N(m, (t_max + v) I), required for cfg.init == "data"."""
    cfg.check()
    seeds = [int(s) for s in seeds]
    if start is not None:
        start = (torch.as_tensor(start[0], dtype=dtype, device=device).expand(shape), float(start[1]))
    elif cfg.init == "data":
        raise ValueError("init 'data' needs the data's mean image and variance (start=(m, v))")
    else:
        start = initial_gaussian(model, tuple(shape), cfg, batch_size, device, dtype)
    parts = []
    n_batches = math.ceil(len(seeds) / batch_size)
    for b in range(n_batches):
        chunk = seeds[b * batch_size:(b + 1) * batch_size]
        cb = (lambda f, b=b: progress((b + f) / n_batches)) if progress else None
        part = sample_batch(model, chunk, tuple(shape), cfg, start, cb)
        if clip:
            part["x"] = part["x"].clamp(0, 1)
        if on_batch:
            on_batch(chunk, part)
        parts.append(part)
    out = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    out["ts"] = t_schedule(cfg.t_max, cfg.t_min, cfg.steps, cfg.schedule, cfg.rho)
    out["start"] = (start[0].cpu(), start[1])
    return out


def acceptance_per_level(accept):
    """(N, levels) accepted fractions -> mean per level (a list)."""
    return accept.mean(0).tolist()
