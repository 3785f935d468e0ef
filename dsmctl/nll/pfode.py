"""Log-likelihood by the probability-flow ODE of an energy (or score) model, VE noise, t = per-pixel variance.

Derivation. y_t = x + sqrt(t) z makes p_t solve the heat equation d/dt p_t = 1/2 Laplacian p_t. The flow
    dy/dt = -1/2 grad_y log p_t(y) = 1/2 grad_y U(y, t)
carries p_t0 to p_t (continuity equation d/dt p + div(p v) = 0 with v = 1/2 grad_y U), and along it
    d/dt log p_t(y_t) = -div v = -1/2 Laplacian_y U(y_t, t).
Integrating from t_min (starting at y = x) to t_max:
    U(x, t_min) = U_prior(y_tmax) - L,   L = int_{t_min}^{t_max} 1/2 Laplacian_y U(y_t, t) dt,
with U_prior = -log p_tmax, taken from the same Gaussian the one-shot anchor uses (N(0, t_max I) for the
'paper' anchor, N(mean, Cov + t_max I) for 'gaussian', fitted on images other than the evaluated ones:
see anchor_prior). Only grad_y U enters: no network energy, no
constant c. We integrate in s = log t (the dynamics span 12 decades of t):
    dy/ds = t/2 grad_y U,   dL/ds = t/2 Laplacian_y U.
Check (1-d Gaussian of variance v): y_T = x sqrt((v+T)/v), L = 1/2 log((v+T)/v), and U_prior(y_T) - L is
x^2/(2v) + 1/2 log(2 pi v) exactly.

The Laplacian is an exact trace (one backward pass per dimension) or a Hutchinson estimate with
Rademacher probes keyed by dataset index and fixed along each trajectory (so the ODE stays smooth and
the adaptive solver sees a deterministic right-hand side); it is unbiased, its noise averages over images.

The solver is Dormand-Prince 5(4) with a step size per image (images in a batch do not wait for, or
shrink the steps of, the hardest one), mixed absolute/relative error control on y and on L, FSAL.
An image that produces non-finite values, needs a step below h_min or more than max_steps steps is
reported as not converged, never averaged silently.
"""
import math
import time
from dataclasses import asdict, dataclass, field

import torch

from ..rng import indexed_uniform

PROBE_STREAM = 5

# Dormand-Prince 5(4) tableau.
C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
A = ((),
     (1 / 5,),
     (3 / 40, 9 / 40),
     (44 / 45, -56 / 15, 32 / 9),
     (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
     (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
     (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84))
B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
E = tuple(b5 - b4 for b5, b4 in zip(B5, B4))


def rademacher_probes(indices, shape, n_probes, seed, dtype, device):
    """(n_probes, B, *shape) of +-1, a pure function of (seed, dataset index)."""
    u = indexed_uniform(indices, (n_probes, *shape), seed, PROBE_STREAM, torch.float64)
    return (torch.where(u < 0.5, -1.0, 1.0)).to(dtype=dtype, device=device).transpose(0, 1).contiguous()


def grad_and_laplacian(model, y, t, probes=None):
    """(grad_y U, Laplacian_y U) at (y, t): exact trace if probes is None, else mean of e^T H e over probes."""
    with torch.enable_grad():
        y = y.detach().requires_grad_(True)
        out = model(y, t, need=("grad_y",), create_graph=True)
        yv, g = out.y, out.grad_y  # EnergyModel differentiates w.r.t. its own leaf copy of y
        lap = torch.zeros(y.shape[0], dtype=g.dtype, device=g.device)
        if probes is None:
            gf = g.flatten(1)
            d = gf.shape[1]
            for i in range(d):
                row = torch.autograd.grad(gf[:, i].sum(), yv, retain_graph=i < d - 1)[0]
                lap += row.flatten(1)[:, i]
        else:
            # A closed-form part of the energy (model.base gaussian) has an exact Laplacian: probe only the rest.
            # Same expectation; the base's large off-diagonal Hessian (correlated pixels) no longer adds noise.
            base = getattr(model, "base", None)
            for k in range(len(probes)):
                hv = torch.autograd.grad((g * probes[k]).sum(), yv, retain_graph=k < len(probes) - 1)[0]
                if base is not None:
                    hv = hv - base.hessian_vector(probes[k], out.t)
                lap += (hv * probes[k]).flatten(1).sum(1)
            lap /= len(probes)
            if base is not None:
                lap += base.laplacian(out.t)
    return g.detach(), lap.detach()


def dopri5(fn, state0, s0, s1, rtol=1e-5, atol=1e-5, h0=None, max_steps=1000, h_min=None):
    """Integrate d state/ds = fn(s, state, rows) from s0 to s1 for a batch of states (B, n), one step size each.

    fn gets the per-row s (R,), the states (R, n) and the row numbers (R,) of the rows it is asked about.
    The error of a step is max(RMS over the first n-1 components, |last component|), each scaled by
    atol + rtol * |value|: the last component (the log-density integral) is held to the tolerance alone.
    Returns (final states, status per row: 0 converged, 1 non-finite, 2 step too small, 3 too many steps,
    number of function evaluations per row, accepted steps per row).
    """
    B = state0.shape[0]
    dev, dt = state0.device, state0.dtype
    span = s1 - s0
    h_min = h_min or 1e-12 * span
    state = state0.clone()
    s = torch.full((B,), float(s0), dtype=torch.float64, device=dev)
    h = torch.full((B,), h0 or span / 50, dtype=torch.float64, device=dev)
    status = torch.full((B,), -1, dtype=torch.long, device=dev)  # -1 running
    nfe = torch.zeros(B, dtype=torch.long, device=dev)
    steps = torch.zeros(B, dtype=torch.long, device=dev)
    rows = torch.arange(B, device=dev)
    k_first = fn(s, state, rows)
    nfe += 1
    bad = ~torch.isfinite(k_first).all(1)
    status[bad] = 1
    while (status == -1).any():
        r = (status == -1).nonzero().flatten()
        hs = torch.minimum(h[r], s1 - s[r])
        sr, yr = s[r], state[r]
        hcol = hs.to(dt)[:, None]
        ks = [k_first[r]]
        for i in range(1, 7):
            yi = yr + hcol * sum(a * k for a, k in zip(A[i], ks) if a != 0.0)
            ks.append(fn(sr + C[i] * hs, yi, r))
        nfe[r] += 6
        y_new = yi  # row 7 of A is B5: the last stage input is the 5th-order solution (FSAL)
        err_vec = hcol * sum(e * k for e, k in zip(E, ks) if e != 0.0)
        scale = atol + rtol * torch.maximum(yr.abs(), y_new.abs())
        ratio = err_vec / scale
        err = torch.maximum(ratio[:, :-1].square().mean(1).sqrt(), ratio[:, -1].abs()).double()
        finite = torch.isfinite(err) & torch.isfinite(y_new).all(1) & torch.isfinite(ks[-1]).all(1)
        err = torch.where(finite, err, torch.full_like(err, math.inf))
        accept = err <= 1.0
        acc_rows = r[accept]
        state[acc_rows] = y_new[accept]
        k_first[acc_rows] = ks[-1][accept]
        s[acc_rows] = sr[accept] + hs[accept]
        steps[acc_rows] += 1
        factor = torch.where(err > 0, 0.9 * err.clamp_min(1e-10) ** -0.2, torch.full_like(err, 5.0)).clamp(0.2, 5.0)
        factor = torch.where(finite, factor, torch.full_like(factor, 0.2))
        h[r] = hs * factor
        done = accept & (s[r] >= s1 - 1e-12 * abs(span))
        status[r[done]] = 0
        running = status[r] == -1
        status[r[running & (h[r] < h_min)]] = 2
        status[r[(status[r] == -1) & (steps[r] >= max_steps)]] = 3
    return state, status, nfe, steps


STATUS_TEXT = {0: "converged", 1: "non-finite values", 2: "step size below h_min", 3: "too many steps"}


@dataclass
class ODEBatch:
    """Per-image results of one batch (energies are U(x, t_min) in nats per image, NaN where not converged)."""
    indices: torch.Tensor
    energy: torch.Tensor
    prior_energy: torch.Tensor
    laplacian_integral: torch.Tensor
    status: torch.Tensor
    nfe: torch.Tensor
    steps: torch.Tensor


def pf_ode_energies(model, x, indices, prior, t_min=1e-9, t_max=1e3, rtol=1e-5, atol=1e-5, probes=None, seed=0,
                    max_steps=1000):
    """U(x, t_min) by the PF-ODE for one batch x (B, *shape); prior(y, t) gives U_prior at t_max.

    probes: None for an exact trace, or the number of Rademacher probes per image (Hutchinson).
    """
    shape, B = x.shape[1:], x.shape[0]
    d = math.prod(shape)
    eps = None if not probes else rademacher_probes(indices, shape, probes, seed, x.dtype, x.device)

    def fn(s, state, rows):
        t = s.exp().to(state.dtype)
        y = state[:, :d].reshape(len(rows), *shape)
        g, lap = grad_and_laplacian(model, y, t, None if eps is None else eps[:, rows])
        half_t = 0.5 * t
        return torch.cat([(half_t[:, None] * g.flatten(1)), (half_t * lap)[:, None]], 1)

    state0 = torch.cat([x.flatten(1), torch.zeros(B, 1, dtype=x.dtype, device=x.device)], 1)
    state, status, nfe, steps = dopri5(fn, state0, math.log(t_min), math.log(t_max), rtol, atol, max_steps=max_steps)
    y_T = state[:, :d].reshape(x.shape)
    L = state[:, d].double()
    with torch.no_grad():
        u_prior = prior(y_T.double(), t_max, need=("energy",)).energy.double()
    energy = torch.where(status == 0, u_prior - L, torch.full_like(L, math.nan))
    return ODEBatch(torch.as_tensor(indices), energy.cpu(), u_prior.cpu(), L.cpu(), status.cpu(), nfe.cpu(), steps.cpu())


@dataclass
class ODEResult:
    """PF-ODE NLL with its protocol and solver statistics (converged images only)."""
    nats_per_dim: float
    bits_per_dim: float
    bits_per_dim_stderr: float
    log_p_db_per_dim: float
    t_min: float
    t_max: float
    prior: str
    divergence: str
    probes: int
    rtol: float
    atol: float
    nfe_mean: float
    nfe_max: int
    seconds: float
    n_images: int
    n_converged: int
    d: int
    quantization_bits: int | None
    seed: int
    data: str
    data_fingerprint: str | None
    noisy_t: float = 0.0  # > 0: evaluated on noisy images y = x + sqrt(noisy_t) z, the ODE starting at noisy_t
    dequantized: bool = False  # evaluated at x + u, u uniform in the bin: an upper bound on the discrete NLL
    not_converged: list = field(default_factory=list)  # [{"index": i, "reason": ...}]

    def to_dict(self):
        return asdict(self)


def summarize(batches, *, d, quantization_bits, elapsed, **protocol):
    """Concatenate ODEBatch results into an ODEResult; returns (result, indices, energies, nfe, status)."""
    from .. import units
    from .likelihood import stderr

    idx = torch.cat([b.indices for b in batches])
    energy = torch.cat([b.energy for b in batches])
    status = torch.cat([b.status for b in batches])
    nfe = torch.cat([b.nfe for b in batches])
    ok = status == 0
    mean = energy[ok].mean().item() if ok.any() else math.nan
    res = ODEResult(
        nats_per_dim=mean / d, bits_per_dim=units.bits_per_dim(mean, d, quantization_bits),
        bits_per_dim_stderr=units.nats_to_bits(stderr(energy[ok])) / d if ok.sum() > 1 else math.nan,
        log_p_db_per_dim=units.log_p_db_per_dim(mean, d), nfe_mean=nfe.double().mean().item(),
        nfe_max=int(nfe.max()), seconds=elapsed, n_images=len(idx), n_converged=int(ok.sum()), d=d,
        quantization_bits=quantization_bits,
        not_converged=[{"index": int(i), "reason": STATUS_TEXT[int(s)]} for i, s in zip(idx[~ok], status[~ok])],
        **protocol)
    return res, idx, energy, nfe, status


def anchor_prior(anchor, data, shape=None, max_images=20_000):
    """The Gaussian at t_max the one-shot anchor assumes: N(0, t_max I) ('paper') or N(mean, Cov + t_max I).

    For 'gaussian', fit `data` on images OTHER than the evaluated ones (eval-nll uses the training split):
    the flow stretches each image along itself (by ~sqrt(t_max / lambda) in a direction of variance
    lambda), and a covariance that contains the image's own x x^T / n then biases its prior energy
    (measured: +0.0024 nats/dim on the d = 1000 GSM with the Gaussian fitted on 2,000 images including
    the evaluated ones; 0.00002 with an independent fit).
    """
    from ..nn.densities import Gaussian
    from .likelihood import fit_anchor

    if anchor == "paper":
        return Gaussian.isotropic(shape or data.shape, 0.0)
    if anchor == "gaussian":
        return fit_anchor(data, max_images=max_images)
    raise ValueError(f"unknown anchor '{anchor}'; expected paper or gaussian")


def pf_ode_nll(model, data, prior, t_min=1e-9, t_max=1e3, rtol=1e-5, atol=1e-5, probes=None, batch_size=64,
               seed=0, device=None, dtype=torch.float32, max_steps=1000, prior_name="given", progress=None,
               noisy_t=0.0, dequantize=False):
    """PF-ODE NLL over a dataset.

    noisy_t = 0: log p_t_min of the clean images, with the one-shot's t = 0 conventions (+8 bits/dim for 8-bit
    data). noisy_t > 0: the cross-entropy of the noisy images y = x + sqrt(noisy_t) z (z keyed by index exactly
    as the one-shot --t draws it), the ODE starting at y and t = noisy_t (continuous density, no +8).
    prior: a density answering prior(y, t, need=("energy",)) (e.g. anchor_prior()).
    dequantize: (8-bit data, noisy_t = 0) start from x + u, u uniform in the 1/256 bin (one draw per image, keyed by
    index as the bound's first draw): then the NLL is an upper bound on the discrete NLL of the ODE's own density
    (Jensen, one draw), the protocol of score-based diffusion models' published likelihoods.
    Returns (ODEResult, indices, energies, nfe, status).
    """
    from ..data.arrays import ArrayData
    from .likelihood import NOISE_STREAM
    from ..rng import indexed_normal

    data = ArrayData.wrap(data)
    t_start = noisy_t if noisy_t > 0 else t_min
    t0 = time.time()
    batches = []
    for idx, x in data.batches(batch_size, device, dtype):
        if noisy_t > 0:
            x = x + math.sqrt(noisy_t) * indexed_normal(idx, data.shape, seed, NOISE_STREAM, dtype, device)
        elif dequantize:
            from .dequantize import bin_offsets

            x = x + bin_offsets(idx, data.shape, seed, 0, dtype=dtype, device=device)[0]
        batches.append(pf_ode_energies(model, x, idx, prior, t_start, t_max, rtol, atol, probes, seed, max_steps))
        if progress:
            progress(sum(len(b.indices) for b in batches), len(data))
    return summarize(batches, d=data.d, quantization_bits=None if noisy_t > 0 else data.quantization_bits,
                     elapsed=time.time() - t0, t_min=float(t_start), t_max=float(t_max), prior=prior_name,
                     divergence="exact" if not probes else "hutchinson", probes=int(probes or 0), rtol=rtol,
                     atol=atol, seed=seed, data=data.name, data_fingerprint=data.fingerprint, noisy_t=float(noisy_t),
                     dequantized=bool(dequantize and not noisy_t))


# eval-nll's estimator interface (nll/request.py). A denoiser (score network) has grad_y but no energy: fine here.
NEEDS_ENERGY = False
EVALUATES_AT_T = False  # the network is read from t_min (or the noisy t) upward, never extrapolated below t_min


def probes_for(probes, d):
    """The solver's Hutchinson probes from a user's setting: None = the default (the exact trace for d <= 64, else one
    probe), 0 = the exact trace (None to pf_ode_energies), n = n probes."""
    if probes is None:
        return None if d <= 64 else 1
    return probes or None


def check(data, request):
    if request.t_min >= request.t_max:
        from .request import RequestError

        raise RequestError(f"--t-min {request.t_min:g}: expected below t_max {request.t_max:g}")


def estimate(model, data, request):
    """request: resolved (t, t_min, t_max, anchor, probes, rtol, atol, max_steps, batch_size, seed, device,
    source/train_split/synthetic for the 'gaussian' prior, constant or None, log)."""
    from .. import data as data_mod
    from .. import units
    from .likelihood import clean_energies
    from .request import Estimate

    probes = probes_for(request.probes, data.d)
    fit_on = (data_mod.open_split(request.source, request.train_split, request.synthetic)
              if request.anchor == "gaussian" else None)
    prior = anchor_prior(request.anchor, fit_on, data.shape)
    log = request.log or (lambda *_: None)
    res, idx, energy, nfe, status = pf_ode_nll(
        model, data, prior, request.t_min, request.t_max, request.rtol, request.atol, probes, request.batch_size,
        request.seed, request.device, max_steps=request.max_steps, prior_name=prior_text(request.anchor, request.t_max),
        progress=lambda k, n: log(f"[pf-ode] {k}/{n} images"), noisy_t=request.t,
        dequantize=request.dequantize)
    report = {}
    if request.constant is not None and not request.t and not request.dequantize:  # the network's energy at the ODE's start: separates t_min -> 0
        u = clean_energies(model, data, request.t_min, request.batch_size, request.device)
        ok = status == 0
        report["energy_at_t_min"] = {"t": request.t_min, "bits_per_dim": units.bits_per_dim(
            u[ok].mean().item() + request.constant[0], data.d, data.quantization_bits),
            "note": "mean U(x, t_min) + c over the converged images: the one-shot formula at the ODE's start"}
    return Estimate(res, idx, energy, res.seconds, protocol(res),
                    columns={"nfe": nfe.tolist(), "status": status.tolist()}, report=report)


def prior_text(anchor, t_max):
    return f"N(0, {t_max:g} I)" if anchor == "paper" else f"N(mean, Cov + {t_max:g} I) fitted to the training split"


def protocol(r):
    div = "exact trace" if r.divergence == "exact" else f"Hutchinson, {r.probes} Rademacher probe(s) per image (seed {r.seed})"
    quant = f", +{r.quantization_bits} bits/dim for {r.quantization_bits}-bit data" if r.quantization_bits else ""
    bad = f"; {r.n_images - r.n_converged} image(s) NOT converged, excluded" if r.n_converged < r.n_images else ""
    start = (f"cross-entropy of the noisy images at t={r.noisy_t:g} (noise keyed by index as the one-shot's), "
             f"ODE from t={r.t_min:g}" if r.noisy_t else
             f"dequantized: -log p_t_min(x + u), u uniform in the 1/256 bin (one draw per image, keyed by index), an "
             f"upper bound on the discrete NLL of the ODE's density, t_min={r.t_min:g}" if r.dequantized else
             f"log p_t_min(x) of the clean images (plug-in at the grid point, not a bound), t_min={r.t_min:g}")
    return (f"PF-ODE NLL: {start} to t_max={r.t_max:g}, prior {r.prior}; divergence by "
            f"{div}; Dormand-Prince 5(4) in log t, rtol={r.rtol:g} atol={r.atol:g}; {r.nfe_mean:.1f} function "
            f"evaluations per image (max {r.nfe_max}); {r.n_converged}/{r.n_images} images of {r.data} "
            f"(fingerprint {r.data_fingerprint}){quant}{bad}")
