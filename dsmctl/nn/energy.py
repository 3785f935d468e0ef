"""Energy models: U(y, t) from a network (EnergyModel), a closed-form Gaussian base, and the denoiser twin.

Each answers model(y, t, need=...) -> EnergyOutput (nn/output.py), as the closed-form densities do.

U(y, t) = -log p_t(y) in nats per image; grad_y = dU/dy (minus the score); grad_t = dU/dt (partial,
y held fixed); denoised = y - t * grad_y (Tweedie / Miyasawa).
"""
import math

import torch
from torch import nn

from .output import NEEDS, EnergyOutput, as_batch_t, expand_as, parse_need  # noqa: F401  (re-exported)


class EnergyModel(nn.Module):
    """U(y, t) = 1/2 <y, f(y, t)> summed over pixels, f a score/denoiser network (the paper's form).

    y and t are re-made into leaves here, so grad_t is always the partial derivative at fixed y even if
    the caller built y from a t that requires grad (otherwise autograd returns the total derivative
    along the noise path and the time-score term silently trains the wrong quantity).
    """

    def __init__(self, net, base=None, offset=None):
        super().__init__()
        self.net = net
        self.base = base  # optional closed-form energy added to the network's (GaussianBase)
        self.offset = offset  # optional learned y-independent g(t) (TimeOffset)

    def energy(self, y, t):
        f = self.net(y, t)
        energy = 0.5 * (y * f).flatten(1).sum(1)
        if self.base is not None:
            energy = energy + self.base(y, t)
        return energy if self.offset is None else energy + self.offset(t)

    def forward(self, y, t, need=("energy",), create_graph=False):
        need = parse_need(need)
        t = as_batch_t(t, y)
        wrt = [k for k in ("grad_y", "grad_t") if k in need]
        if not wrt:
            with torch.set_grad_enabled(torch.is_grad_enabled() and create_graph):
                return EnergyOutput(y, t, energy=self.energy(y, t))
        y = y.detach().requires_grad_(True)
        t = t.detach().requires_grad_("grad_t" in need)
        with torch.enable_grad():
            energy = self.energy(y, t)
            inputs = {"grad_y": y, "grad_t": t}
            grads = torch.autograd.grad(energy.sum(), [inputs[k] for k in wrt], create_graph=create_graph)
        grads = dict(zip(wrt, grads))
        if not create_graph:
            energy, y, t = energy.detach(), y.detach(), t.detach()
        return EnergyOutput(y, t, energy=energy if "energy" in need else None, **grads)


class TimeOffset(nn.Module):
    """A learned y-independent energy g(t) = d * sum_k a_k softplus(s_k - s), s = log(t + 1e-9) (not in the paper).

    Why: U = 1/2 <y, f(y, t)> with a bias-free f has no term that depends on t alone, yet the true energy does
    (the log-normalizer of p_t; on 8-bit data below the quantization variance it grows like (d/2) log t). The
    network has to fake it with y-dependent features, which compete with the score. g leaves grad_y untouched
    (the space term and the PF-ODE do not see it) and is trained by the time term alone, which fits its slope
    to the mean time-score residual at every t. The basis is linear in its coefficients: one ramp of slope -1
    below each knot, knots one e-fold apart over [log 1e-9, log 1e3 + 1] (the last acts as a linear term);
    the factor d makes a coefficient of 0.5 the (d/2) log t of an atom. Zero-initialized: g = 0 at step 0.
    """

    def __init__(self, d, s_min=math.log(1e-9), s_max=math.log(1e3) + 1.0):
        super().__init__()
        self.d = d
        n = int(math.ceil(s_max - s_min)) + 1
        self.register_buffer("knots", torch.linspace(s_min, s_min + n - 1, n, dtype=torch.float64), persistent=False)
        self.coef = nn.Parameter(torch.zeros(n))

    def forward(self, t):
        s = torch.log(t + 1e-9)
        ramps = torch.nn.functional.softplus(self.knots.to(s.dtype) - s[:, None])  # (B, K)
        return self.d * (ramps @ self.coef.to(s.dtype))


class GaussianBase(nn.Module):
    """The energy of N(mean, Cov + tI), a Gaussian fitted to the training data (not in the paper).

    With `model.base: gaussian` the network learns only the non-Gaussian part of the energy, starting from
    the Gaussian itself (the last conv is zero-initialized), which is consistent across t from step 0;
    a short run then no longer has to learn the t-dependence of the whole log-normalizer. Buffers only
    (saved with the weights); `set_gaussian` fills them before training.
    """

    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(shape)
        d = math.prod(self.shape)
        self.register_buffer("mean", torch.zeros(d, dtype=torch.float64))
        self.register_buffer("eigvecs", torch.eye(d, dtype=torch.float64))
        self.register_buffer("eigvals", torch.ones(d, dtype=torch.float64))
        self.register_buffer("floor", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def set_gaussian(self, gaussian):
        """Copy a densities.Gaussian (e.g. likelihood.fit_anchor of the training split).

        A low-rank fit (N <= d training examples) keeps its floor variance on the complement of its span;
        the basis is completed here so the buffers always hold d orthonormal directions.
        """
        d = self.mean.numel()
        vals = gaussian.variances().to(torch.float64)
        vecs = torch.eye(d, dtype=torch.float64) if gaussian.eigvecs is None else gaussian.eigvecs.to(torch.float64)
        if vecs.shape[1] < d:
            if gaussian.floor <= 0:
                raise ValueError(f"the Gaussian base has rank {gaussian.rank} of {d} and no floor variance: "
                                 "fit it with min_var > 0")
            # QR of [V | I]: the first r columns are V (up to sign), the rest span its complement.
            vecs = torch.linalg.qr(torch.cat([vecs, torch.eye(d, dtype=torch.float64)], 1))[0]
        self.mean.copy_(gaussian.mean.reshape(-1))
        self.eigvecs.copy_(vecs)
        self.eigvals.copy_(vals)
        self.floor.fill_(gaussian.floor)

    def problem(self):
        """Why these buffers (read from a file) are not a Gaussian density, or None: every eigenvalue of the
        covariance must be positive and finite, the floor variance non-negative, the mean finite."""
        vals = self.eigvals
        if not torch.isfinite(vals).all() or not (vals > 0).all():
            bad = vals[~(torch.isfinite(vals) & (vals > 0))]
            return (f"base.eigvals: {bad.numel()} of {vals.numel()} covariance eigenvalues are not positive and "
                    f"finite (e.g. {bad[0].item():g}); expected a Gaussian base with a positive covariance")
        if not math.isfinite(float(self.floor)) or float(self.floor) < 0:
            return f"base.floor: {float(self.floor):g}; expected a non-negative finite floor variance"
        if not torch.isfinite(self.mean).all() or not torch.isfinite(self.eigvecs).all():
            return "base.mean / base.eigvecs: non-finite values; expected a finite Gaussian base"
        return None

    def laplacian(self, t):
        """Laplacian_y of the energy: tr (Cov + tI)^-1, the same at every y. (B,) for t (B,)."""
        return (1 / (self.eigvals.to(t.dtype) + t[:, None])).sum(1)

    def hessian_vector(self, v, t):
        """(Cov + tI)^-1 v for v like y: the base's exact Hessian-vector product."""
        vecs = self.eigvecs.to(v.dtype)
        coef = (v.flatten(1) @ vecs) / (self.eigvals.to(v.dtype) + t[:, None])
        return (coef @ vecs.T).reshape(v.shape)

    def forward(self, y, t):
        from .densities import Gaussian

        g = Gaussian(self.shape, self.mean, self.eigvecs, self.eigvals, float(self.floor))
        return g(y, t).energy


class DenoiserModel(nn.Module):
    """Score-network twin: the same network read directly as grad_y U = f(y, t); no energy, no grad_t.

    Trained with the space-score term alone; used for the paper's denoising comparison (Table 1).
    """

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, y, t, need=("grad_y",), create_graph=False):
        need = parse_need(need)
        if need - {"grad_y"}:
            raise ValueError(f"a denoiser model has no {sorted(need - {'grad_y'})}: it gives only grad_y and denoised")
        t = as_batch_t(t, y)
        return EnergyOutput(y, t, grad_y=self.net(y, t))
