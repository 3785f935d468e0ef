"""Closed-form densities: Gaussians and Gaussian mixtures (Gaussian scale mixtures among them).

Kinds for synthetic data (from_spec): gsm (isotropic scale mixture), gaussian, gsm-image (an image-like scale
mixture, diagonal in the 2-D DCT basis with a power-law spectrum: gsm_image).

For x ~ p, the noisy density p_t = p * N(0, tI) stays closed form: a Gaussian N(mu, S) becomes
N(mu, S + tI), and a mixture mixes the noisy components with the same weights. Each density answers
the model interface density(y, t, need=...) -> EnergyOutput with the exact energy, grad_y and grad_t,
so every estimator in dsmctl runs unchanged on the truth.
"""
import math

import torch

from .output import EnergyOutput, as_batch_t, parse_need

LOG_2PI = math.log(2 * math.pi)


def ledoit_wolf(xc):
    """(shrunk covariance, intensity) of centred samples xc (N, d): (1 - delta) S + delta mu I, mu = tr S / d,
    delta = min(1, b2 / d2), d2 = ||S - mu I||_F^2, b2 = (1/N^2) sum_i ||x_i x_i^T - S||_F^2 (Ledoit & Wolf 2004)."""
    n, d = xc.shape
    cov = xc.T @ xc / n
    mu = cov.trace() / d
    eye = torch.eye(d, dtype=cov.dtype, device=cov.device)
    d2 = ((cov - mu * eye) ** 2).sum()
    # sum_i ||x_i x_i^T - S||^2 = sum_i ||x_i||^4 - 2 sum_i x_i^T S x_i + N ||S||^2, without forming N d x d matrices
    b2 = (((xc ** 2).sum(1) ** 2).sum() - 2 * ((xc @ cov) * xc).sum() + n * (cov ** 2).sum()) / n ** 2
    delta = 1.0 if d2 <= 0 else min(1.0, (b2 / d2).item())
    return (1 - delta) * cov + delta * mu * eye, delta


class Gaussian:
    """N(mean, S) with S = V diag(eigvals) V^T + floor (I - V V^T), V (d, r) orthonormal columns.

    r = 0 is isotropic (S = floor I); r = d is a full covariance; 0 < r < d a low-rank covariance plus an
    isotropic floor (e.g. fitted from fewer images than dimensions).
    """

    def __init__(self, shape, mean=None, eigvecs=None, eigvals=None, floor=1.0):
        self.shape = tuple(shape)
        self.d = math.prod(self.shape)
        f64 = dict(dtype=torch.float64)
        self.mean = torch.zeros(self.d, **f64) if mean is None else torch.as_tensor(mean).to(**f64).reshape(self.d)
        self.eigvecs = None if eigvecs is None else torch.as_tensor(eigvecs).to(**f64)
        self.eigvals = torch.zeros(0, **f64) if eigvals is None else torch.as_tensor(eigvals).to(**f64)
        self.floor = float(floor)
        self.rank = 0 if self.eigvecs is None else self.eigvecs.shape[1]

    @classmethod
    def isotropic(cls, shape, variance=1.0, mean=None):
        return cls(shape, mean=mean, floor=variance)

    @classmethod
    def from_covariance(cls, cov, mean=None, shape=None):
        cov = torch.as_tensor(cov, dtype=torch.float64)
        eigvals, eigvecs = torch.linalg.eigh(cov)
        return cls(shape or (cov.shape[0],), mean=mean, eigvecs=eigvecs, eigvals=eigvals.clamp_min(0), floor=0.0)

    @classmethod
    def fit(cls, x, min_var=0.0, shrink=False):
        """Maximum-likelihood Gaussian of samples x (N, ...); eigenvalues clamped at min_var.

        With N <= d the covariance has rank < N: the complement gets variance min_var (must be > 0).
        shrink: Ledoit-Wolf shrinkage of the covariance toward (tr S / d) I, its intensity estimated from the
        samples (Ledoit & Wolf 2004): full rank for any N, close to the ML fit when N >> d. The intensity is
        kept as `.shrinkage`.
        """
        shape = tuple(x.shape[1:])
        x = x.reshape(x.shape[0], -1).to(torch.float64)
        n, d = x.shape
        mean = x.mean(0)
        xc = x - mean
        if shrink:
            cov, delta = ledoit_wolf(xc)
            eigvals, eigvecs = torch.linalg.eigh(cov)
            g = cls(shape, mean, eigvecs, eigvals.clamp_min(min_var), floor=min_var)
            g.shrinkage = delta
            return g
        if n > d:
            eigvals, eigvecs = torch.linalg.eigh(xc.T @ xc / n)
            return cls(shape, mean, eigvecs, eigvals.clamp_min(min_var), floor=min_var)
        if min_var <= 0:
            raise ValueError(f"fitting a Gaussian to {n} samples in {d} dimensions needs min_var > 0")
        # Gram trick: eigenvectors of X^T X / n from those of X X^T / n.
        g_vals, g_vecs = torch.linalg.eigh(xc @ xc.T / n)
        keep = g_vals > 1e-12 * g_vals.max().clamp_min(1e-300)
        g_vals, g_vecs = g_vals[keep], g_vecs[:, keep]
        eigvecs = xc.T @ g_vecs / (n * g_vals).sqrt()
        return cls(shape, mean, eigvecs, g_vals.clamp_min(min_var), floor=min_var)

    def to(self, ref):
        kw = dict(dtype=ref.dtype, device=ref.device)
        vecs = None if self.eigvecs is None else self.eigvecs.to(**kw)
        return self.mean.to(**kw), vecs, self.eigvals.to(**kw)

    def variances(self):
        """All d eigenvalues of S (the floor repeated d - r times)."""
        return torch.cat([self.eigvals, torch.full((self.d - self.rank,), self.floor, dtype=torch.float64)])

    def entropy(self, t=0.0):
        """Differential entropy of p_t in nats per image: 1/2 log det(2 pi e (S + tI))."""
        return 0.5 * (self.variances() + t).log().sum().item() + 0.5 * self.d * (LOG_2PI + 1)

    def effective_dimension(self, t):
        """E||x - D(x + sqrt(t) z, t)||^2 / t = sum_i lambda_i / (lambda_i + t)."""
        v = self.variances()
        return (v / (v + t)).sum().item()

    def __call__(self, y, t, need=("energy",), create_graph=False):
        need = parse_need(need)
        t = as_batch_t(t, y)
        mean, vecs, vals = self.to(y)
        r = y.reshape(y.shape[0], -1) - mean
        tt = t[:, None]
        beta = self.floor + t  # variance of the complement
        n_perp = self.d - self.rank
        c = r @ vecs if self.rank else r[:, :0]
        alpha = vals + tt
        r2 = (r * r).sum(1)
        perp2 = (r2 - (c * c).sum(1)).clamp_min(0) if n_perp else torch.zeros_like(t)
        perp_over_beta = (perp2 / beta) if n_perp else torch.zeros_like(t)
        out = EnergyOutput(y, t)
        if "energy" in need:
            logdet = alpha.log().sum(1) + (n_perp * beta.log() if n_perp else 0)
            out.energy = 0.5 * ((c * c / alpha).sum(1) + perp_over_beta + logdet + self.d * LOG_2PI)
        if "grad_y" in need:
            g = (c / alpha) @ vecs.T if self.rank else torch.zeros_like(r)
            if n_perp:
                r_perp = r - (c @ vecs.T if self.rank else 0)
                g = g + r_perp / beta[:, None]
            out.grad_y = g.reshape(y.shape)
        if "grad_t" in need:
            trace = (1 / alpha).sum(1) + (n_perp / beta if n_perp else 0)
            quad = (c * c / alpha**2).sum(1) + (perp2 / beta**2 if n_perp else 0)
            out.grad_t = 0.5 * (trace - quad)
        return out

    def sample(self, n, generator=None, dtype=torch.float64):
        eps = torch.randn(n, self.d, generator=generator, dtype=torch.float64)
        x = self.floor**0.5 * eps
        if self.rank:
            proj = eps @ self.eigvecs
            x = x + ((self.eigvals.sqrt() - self.floor**0.5) * proj) @ self.eigvecs.T
        return (x + self.mean).reshape(n, *self.shape).to(dtype)

    def params(self):
        return {"kind": "gaussian", "shape": list(self.shape), "rank": self.rank, "floor": self.floor}


class Mixture:
    """sum_k w_k N_k: energy -logsumexp_k(log w_k - U_k); grad_y, grad_t are responsibility-weighted."""

    def __init__(self, components, weights):
        self.components = list(components)
        self.shape = self.components[0].shape
        self.d = self.components[0].d
        w = torch.as_tensor(weights, dtype=torch.float64)
        self.log_weights = (w / w.sum()).log()

    def __call__(self, y, t, need=("energy",), create_graph=False):
        need = parse_need(need)
        t = as_batch_t(t, y)
        outs = [c(y, t, need=need | {"energy"}) for c in self.components]
        logits = self.log_weights.to(y) - torch.stack([o.energy for o in outs], 1)  # (B, K)
        resp = logits.softmax(1)
        out = EnergyOutput(y, t)
        if "energy" in need:
            out.energy = -logits.logsumexp(1)
        if "grad_y" in need:
            out.grad_y = sum(resp[:, k].reshape(-1, *[1] * (y.dim() - 1)) * o.grad_y for k, o in enumerate(outs))
        if "grad_t" in need:
            out.grad_t = sum(resp[:, k] * o.grad_t for k, o in enumerate(outs))
        return out

    def sample(self, n, generator=None, dtype=torch.float64):
        which = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
        x = torch.empty(n, *self.shape, dtype=torch.float64)
        for k, c in enumerate(self.components):
            idx = (which == k).nonzero().flatten()
            if len(idx):
                x[idx] = c.sample(len(idx), generator=generator)
        return x.to(dtype)

    def params(self):
        return {"kind": "mixture", "weights": self.log_weights.exp().tolist(), "components": [c.params() for c in self.components]}


def gsm(d, variances=(1.0, 16.0), weights=None):
    """Isotropic Gaussian scale mixture sum_k w_k N(0, s_k I) in d dimensions (paper Fig. 1: s = 1, 16)."""
    weights = weights or [1.0] * len(variances)
    return Mixture([Gaussian.isotropic((d,), v) for v in variances], weights)


def dct_matrix(n):
    """Orthonormal DCT-II matrix (n, n): row k is the basis vector a_k cos(pi (2j + 1) k / (2n)), j = 0..n-1,
    a_0 = sqrt(1/n), a_k = sqrt(2/n); D D^T = I. Row k has frequency k / (2n) cycles per pixel."""
    j = torch.arange(n, dtype=torch.float64)
    k = j[:, None]
    m = torch.cos(math.pi * (2 * j[None, :] + 1) * k / (2 * n)) * math.sqrt(2 / n)
    m[0] = 1 / math.sqrt(n)
    return m


def dct2_basis(size):
    """(size², size²) orthonormal 2-D DCT-II basis as columns: column k1·size + k2 is the image
    D[k1] ⊗ D[k2] flattened row-major (pixel (i, j) at i·size + j); frequencies (k1, k2) / (2·size)."""
    d1 = dct_matrix(size)
    return torch.kron(d1, d1).T.contiguous()


def gsm_image(size=16, channels=1, spectrum_exponent=2.0, f0=1 / 128, pixel_std=0.22, variances=(0.25, 1.75),
              weights=None, mean=0.5):
    """An image-like Gaussian scale mixture: x = mean + s·C^(1/2)·g, g ~ N(0, I), s² = variances[k] with
    probability weights[k]; channels x size x size, each channel independent with the same C.

    C is diagonal in the orthonormal 2-D DCT-II basis with power ∝ 1 / (f0² + |f|²)^(exponent / 2), f the
    2-D frequency (k1, k2) / (2·size) in cycles per pixel, scaled so that the mean per-pixel variance of x,
    E[s²]·tr(C)/d, is pixel_std². p_t = Σ_k w_k N(mean, s_k² C + t I) exactly (shared eigenvectors).
    """
    size, channels, variances = int(size), int(channels), [float(v) for v in variances]
    weights = [float(w) for w in (weights or [1.0] * len(variances))]
    if len(weights) != len(variances) or min(weights) <= 0 or min(variances) <= 0:
        raise ValueError(f"variances {list(variances)} and weights {weights}: need as many of each, all > 0")
    if size < 1 or channels < 1 or pixel_std <= 0 or f0 < 0 or (f0 == 0 and spectrum_exponent > 0):
        raise ValueError("gsm-image needs size, channels, pixel_std > 0 and f0 > 0 (f0 = 0 only with exponent <= 0)")
    k = torch.arange(size, dtype=torch.float64) / (2 * size)
    f2 = (k[:, None] ** 2 + k[None, :] ** 2).flatten()  # order of dct2_basis's columns
    power = (f0 ** 2 + f2) ** (-spectrum_exponent / 2)
    w = torch.as_tensor(weights, dtype=torch.float64)
    mean_s2 = (w / w.sum() * torch.as_tensor(variances, dtype=torch.float64)).sum()
    power = power * pixel_std ** 2 / (mean_s2 * power.mean())  # E[s²]·tr(C)/d = pixel_std²
    basis = torch.block_diag(*[dct2_basis(size)] * channels)
    power = power.repeat(channels)
    shape = (channels, size, size)
    means = torch.full((channels * size * size,), float(mean), dtype=torch.float64)
    comps = [Gaussian(shape, means, basis, v * power, floor=0.0) for v in variances]
    return Mixture(comps, weights)


def moment_matched(density):
    """The Gaussian with the mean and covariance of a mixture whose components share mean and eigenvectors
    (a Gaussian scale mixture): N(mean, Σ_k w_k S_k)."""
    comps = density.components
    w = density.log_weights.exp()
    c0 = comps[0]
    if any(c.eigvecs is not c0.eigvecs and not torch.equal(c.eigvecs, c0.eigvecs) for c in comps) or \
            any(not torch.equal(c.mean, c0.mean) for c in comps):
        raise ValueError("moment_matched needs components with one mean and one set of eigenvectors")
    vals = sum(wk * c.eigvals for wk, c in zip(w, comps))
    floor = sum(wk.item() * c.floor for wk, c in zip(w, comps))
    return Gaussian(c0.shape, c0.mean, c0.eigvecs, vals, floor=floor)


def mixture_entropy(density, t=0.0, n=20_000, generator=None):
    """(H, stderr): the entropy of a mixture of Gaussians' p_t in nats per image, stratified by component.

    With r_k(y) = w_k exp(-U_k(y)) / p(y), -log p(y) = U_k(y) - log w_k + log r_k(y), so
    H = Σ_k w_k [H_k(t) - log w_k + E_{y ~ N_k(t)} log r_k(y)]: the Gaussian entropies H_k(t) are exact and
    only the small term E log r_k (≤ 0, zero for separated components) is sampled, n draws per component.
    """
    w = density.log_weights.exp()
    h, var = 0.0, 0.0
    for k, comp in enumerate(density.components):
        y = comp.sample(n, generator)
        y = y + t ** 0.5 * torch.randn(y.shape, generator=generator, dtype=torch.float64)
        energies = torch.stack([c(y, t).energy for c in density.components], 1)
        log_r = (density.log_weights - energies).log_softmax(1)[:, k]
        h += w[k].item() * (comp.entropy(t) - density.log_weights[k].item() + log_r.mean().item())
        var += w[k].item() ** 2 * log_r.var().item() / n
    return h, var ** 0.5


def from_spec(spec):
    """Build a density from a recipe/manifest dict, e.g. {kind: gsm, d: 1000, variances: [1, 16]}."""
    spec = dict(spec)
    kind = spec.pop("kind", None)
    allowed = {"gsm": {"d", "variances", "weights"}, "gaussian": {"d", "variance", "spectrum", "basis_seed"},
               "gsm-image": {"size", "channels", "spectrum_exponent", "f0", "pixel_std", "variances", "weights", "mean"}}
    if kind not in allowed:
        raise ValueError(f"unknown synthetic density kind {kind!r}; expected gsm, gaussian or gsm-image")
    unknown = set(spec) - allowed[kind]
    if unknown:
        raise ValueError(f"unknown parameter(s) {sorted(unknown)} for kind {kind}; expected {sorted(allowed[kind])}")
    if kind == "gsm-image":
        return gsm_image(**spec)
    if "d" not in spec:
        raise ValueError(f"kind {kind} needs the dimension d")
    if kind == "gsm":
        return gsm(int(spec["d"]), tuple(spec.get("variances", (1.0, 16.0))), spec.get("weights"))
    if kind == "gaussian":
        d = int(spec["d"])
        if "spectrum" in spec:  # power-law spectrum lambda_i = scale * (i+1)^-exponent, random basis from seed
            g = torch.Generator().manual_seed(int(spec.get("basis_seed", 0)))
            q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
            sp = spec["spectrum"]
            vals = sp["scale"] * torch.arange(1, d + 1, dtype=torch.float64) ** -float(sp["exponent"])
            return Gaussian((d,), eigvecs=q, eigvals=vals, floor=0.0)
        return Gaussian.isotropic((d,), float(spec.get("variance", 1.0)))
