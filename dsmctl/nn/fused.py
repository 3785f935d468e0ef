"""GainNorm then GELU as one autograd node, with hand-written first and second derivatives.

Why: the energy step differentiates the network twice (grad_y U with create_graph=True, then the loss
backward). Left to autograd, every norm and GELU expands into dozens of kernels in the second backward;
written out by hand, the same derivatives take fewer passes over memory and fewer kernels. It is the same
function with the same derivatives as the plain-autograd GainNorm + F.gelu (tests compare both, and check
the second derivatives with gradgradcheck).

Per sample and channel, over the n = H*W pixels of the conv output u:
  xc = u - mean(u),  v = mean(xc^2),  q = 1/(v + eps),  vbar = mean over channels of v
  r = sqrt(vbar q + eps),  s = r * gain,  a = s * xc,  h = gelu(a)
NormGELU computes h. Its backward is NormGELUGrad, (g, u, gain) -> (du, dgain), an autograd node itself:
  ga = gelu'(a) g,  P = sum ga,  S = sum ga * xc
  du = s (ga - P/n) + beta xc,  beta = (2/n) dL/dv = (2/n) (mean_c(k) - k vbar q),  k = kappa S,  kappa = gain q/(2r)
  dgain = r S
and NormGELUGrad.backward (run by the second backward of the energy step) is its derivative, written out.
Per-channel quantities are (B, C, 1, 1) tensors; the few full-size passes are what costs.
"""
import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)


def channel_terms(v, gain, eps):
    """q, vbar, r, s, w = q / (2 r) from the channel variances v and gains, both (B, C, 1, 1)."""
    q = (v + eps).reciprocal_()
    vbar = v.mean(1, keepdim=True)
    r = (vbar * q).add_(eps).sqrt_()
    return q, vbar, r, r * gain, q / (2 * r)


class NormGELU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, gain, eps):
        v, mu = torch.var_mean(u, (2, 3), correction=0, keepdim=True)
        q, vbar, r, s, w = channel_terms(v, gain[:, :, None, None], eps)
        a = (u - mu).mul_(s)
        ctx.save_for_backward(u, gain, a, mu, q, vbar, r, s, w)  # all but u, gain: helpers, see NormGELUGrad
        return F.gelu(a)

    @staticmethod
    def backward(ctx, g):
        u, gain, *helpers = ctx.saved_tensors
        du, dgain = NormGELUGrad.apply(g, u, gain, *helpers)
        return du, dgain, None


class NormGELUGrad(torch.autograd.Function):
    """(g, u, gain) -> (dL/du, dL/dgain) given dL/dh = g. The helpers (a, mu, q, vbar, r, s, w) are functions
    of u and gain computed by the forward; backward() accounts for that dependence by hand."""

    @staticmethod
    def forward(ctx, g, u, gain, a, mu, q, vbar, r, s, w):
        n = u.shape[2] * u.shape[3]
        xc = u - mu
        ga = torch.ops.aten.gelu_backward(g, a)
        P = ga.sum((2, 3), keepdim=True)
        S = (ga * xc).sum((2, 3), keepdim=True)
        kappa = gain[:, :, None, None] * w
        vq = vbar * q
        k = kappa * S
        beta = (k.mean(1, keepdim=True) - k * vq).mul_(2 / n)
        du = torch.addcmul((s * P).mul_(-1 / n), ga, s).addcmul_(xc, beta)
        ctx.save_for_backward(g, gain, xc, a, ga, P, S, q, vbar, r, s, w, kappa, vq, k, beta)
        return du, (r * S)[:, :, 0, 0]

    @staticmethod
    @once_differentiable  # no third derivatives (nothing needs them): .backward() through one raises, but
    # torch.autograd.grad(..., inputs=...) may silently leave that part out; do not differentiate three times
    def backward(ctx, G, Gamma):
        """G = dL/d(du) (full size), Gamma = dL/d(dgain) (B, C) -> dL/dg, dL/du, dL/dgain."""
        g, gain, xc, a, ga, P, S, q, vbar, r, s, w, kappa, vq, k, beta = ctx.saved_tensors
        n, C = xc.shape[2] * xc.shape[3], xc.shape[1]
        gain, Gamma = gain[:, :, None, None], Gamma[:, :, None, None]
        # Adjoints of the per-channel quantities of du = s ga - s P/n + beta xc and dgain = r S.
        G1 = G.sum((2, 3), keepdim=True)
        beta_bar = (G * xc).sum((2, 3), keepdim=True)
        k_bar = (beta_bar.mean(1, keepdim=True) - beta_bar * vq).mul_(2 / n)
        S_bar = k_bar * kappa + Gamma * r
        P_bar = (s * G1).mul_(-1 / n)
        # ga = gelu'(a) g enters du directly and through P = sum ga and S = sum ga xc.
        ga_bar = torch.addcmul(P_bar, xc, S_bar).addcmul_(G, s)
        dg = torch.ops.aten.gelu_backward(ga_bar, a)
        a2 = a * a  # gelu''(a) = phi(a) (2 - a^2)
        a_bar = (a2 * -0.5).exp_().mul_((a2 * -INV_SQRT_2PI).add_(2 * INV_SQRT_2PI)).mul_(ga_bar).mul_(g)
        s_bar = ((G * ga).sum((2, 3), keepdim=True) - P * G1 / n) + (a_bar * xc).sum((2, 3), keepdim=True)
        # gain and v (through q, vbar, r) enter s = r gain, w, kappa = gain w, k = kappa S, vq = vbar q, beta, r S.
        vq_bar = -(2 / n) * beta_bar * k
        kappa_bar = k_bar * S
        gain_bar = kappa_bar * w + s_bar * r
        w_bar = kappa_bar * gain
        r_bar = s_bar * gain + S * Gamma - w_bar * w / r
        A = vq_bar + r_bar / (2 * r)  # adjoint of vbar q through vq and through r = sqrt(vbar q + eps)
        q_bar = w_bar / (2 * r) + A * vbar
        v_bar = (A * q).sum(1, keepdim=True) / C - q_bar * q * q
        # dL/dxc, then du = dL/dxc - mean(dL/dxc) (xc = u - mean u); with mean(xc) = 0 the mean is a constant.
        a_bar_sum = a_bar.sum((2, 3), keepdim=True)
        du = torch.addcmul(-(beta * G1 + S_bar * P + s * a_bar_sum) / n, xc, (2 / n) * v_bar)
        du.addcmul_(G, beta).addcmul_(ga, S_bar).addcmul_(a_bar, s)
        return (dg, du, gain_bar[:, :, 0, 0]) + (None,) * 7


def norm_gelu(u, gain, eps=1e-5):
    """gelu(GainNorm(u, gain)) for u (B, C, H, W) and gain (B, C)."""
    return NormGELU.apply(u, gain, eps)
