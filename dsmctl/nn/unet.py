"""The paper's bias-free UNet f(y, t), with noise entering only as per-channel gains in the norms.

Default widths reproduce the paper's colour model exactly (8,649,856 parameters). Every layer is
conv -> norm -> GELU except the last conv. Down-sampling is a 2x2 stride-2 conv opening encoder blocks
1.. and the middle block; up-sampling a 2x2 stride-2 transposed conv closing the middle block and
decoder blocks 1..; skips are channel concatenations.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from .fused import norm_gelu


class NoiseEmbedding(nn.Module):
    """emb(t) = SiLU(W2 SiLU(W1 phi(t))), phi = [cos(w_k s), sin(w_k s)].

    kind="paper": s = t (raw variance), 32 frequencies log-spaced 1 .. 0.01, as published; nearly
    constant for t << 1, so the network barely sees small noise levels.
    kind="logt": s = log(t + 1e-9), 32 frequencies log-spaced 4 .. 0.04, which resolves every decade
    of t in [1e-9, 1e3] (the paper's training range) and maps t = 0 to the edge of that range.
    """

    def __init__(self, kind="paper", n_freq=32, dim=256):
        super().__init__()
        if kind not in ("paper", "logt"):
            raise ValueError(f"unknown noise embedding '{kind}'; expected paper or logt")
        self.kind = kind
        hi, lo = (1.0, 0.01) if kind == "paper" else (4.0, 0.04)
        self.register_buffer("freqs", torch.logspace(math.log10(hi), math.log10(lo), n_freq), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * n_freq, dim), nn.SiLU(), nn.Linear(dim, dim), nn.SiLU())

    def forward(self, t):
        s = t if self.kind == "paper" else torch.log(t + 1e-9)
        arg = s[:, None] * self.freqs.to(s.dtype)
        return self.mlp(torch.cat([arg.cos(), arg.sin()], 1))


class NoiseGains(nn.Module):
    """Every layer's per-channel noise gain w_c (1 + e_c(t)), e(t) = Linear_{256 -> C}(emb(t)), in one Linear.

    The same function and parameter count as one Linear(256, C) + weight per layer (the paper's layout),
    computed with one matmul instead of twenty (fewer, larger kernels in the forward and both backwards).
    """

    def __init__(self, channels, emb_dim=256):
        super().__init__()
        self.channels = list(channels)
        self.weight = nn.Parameter(torch.ones(sum(self.channels)))
        self.linear = nn.Linear(emb_dim, sum(self.channels))

    def forward(self, emb):
        return (self.weight * (1 + self.linear(emb))).split(self.channels, 1)


class GainNorm(nn.Module):
    """Bias-free, positively 1-homogeneous per-sample channel norm with a noise-dependent gain.

    (x_c - mu_c) * sqrt(mean_c' v_c' / (v_c + eps) + eps) * gain_c: channels are brought to the mean channel
    variance (so the overall scale of x passes through), then multiplied by gain = w (1 + e(t)) (NoiseGains).
    With gelu=True it also applies the GELU that follows every norm in the UNet; `fused` then runs both as one
    autograd node with hand-written first and second derivatives (nn/fused.py), the same function with far
    fewer kernels in the energy step's double backward. fused=False is the plain-autograd reference.
    """

    def __init__(self, eps=1e-5, fused=True):
        super().__init__()
        self.eps, self.fused = eps, fused

    def forward(self, x, gain, gelu=False):
        if gelu and self.fused:
            return norm_gelu(x, gain, self.eps)
        var, mu = torch.var_mean(x, (2, 3), correction=0, keepdim=True)
        scale = (var.mean(1, keepdim=True) / (var + self.eps) + self.eps).sqrt()
        x = (x - mu) * (scale * gain[:, :, None, None])  # per-channel factors first: one full-size multiply
        return F.gelu(x) if gelu else x


class Layer(nn.Module):
    """conv -> GainNorm -> GELU, the conv being 3x3, 2x2 stride-2 ("down") or 2x2 transposed ("up")."""

    def __init__(self, cin, cout, kind="conv"):
        super().__init__()
        self.channels = cout
        if kind == "conv":
            self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        elif kind == "down":
            self.conv = nn.Conv2d(cin, cout, 2, stride=2, bias=False)
        else:
            self.conv = nn.ConvTranspose2d(cin, cout, 2, stride=2, bias=False)
        self.norm = GainNorm()

    def forward(self, x, gain):
        return self.norm(self.conv(x), gain, gelu=True)


class UNet(nn.Module):
    def __init__(self, channels=3, widths=(64, 128, 256), mid_width=512, layers_per_block=3,
                 embedding="paper", emb_dim=256):
        super().__init__()
        if layers_per_block < 2:
            raise ValueError("layers_per_block must be >= 2 (the middle block needs a down and an up layer)")
        self.channels, self.widths = channels, tuple(widths)
        self.embed = NoiseEmbedding(embedding, dim=emb_dim)
        L, W = layers_per_block, self.widths
        self.encoders = nn.ModuleList()
        for i, w in enumerate(W):
            first = Layer(channels, w, "conv") if i == 0 else Layer(W[i - 1], w, "down")
            self.encoders.append(nn.ModuleList([first] + [Layer(w, w, "conv") for _ in range(L - 1)]))
        self.middle = nn.ModuleList([Layer(W[-1], mid_width, "down")]
                                    + [Layer(mid_width, mid_width, "conv") for _ in range(L - 2)]
                                    + [Layer(mid_width, W[-1], "up")])
        self.decoders = nn.ModuleList()
        for i, w in enumerate(W):
            layers = [Layer(2 * w, w, "conv")] + [Layer(w, w, "conv") for _ in range(L - 2)]
            if i > 0:
                layers.append(Layer(w, W[i - 1], "up"))
            self.decoders.append(nn.ModuleList(layers))
        self.out = nn.Conv2d(W[0], channels, 3, padding=1, bias=False)
        self.gains = NoiseGains([layer.channels for layer in self.layers_in_order()], emb_dim)

    def layers_in_order(self):
        """Every Layer in the order forward() runs them (the order of the gains)."""
        for block in [*self.encoders, self.middle, *reversed(self.decoders)]:
            yield from block

    @property
    def downsampling(self):
        return 2 ** len(self.widths)

    def forward(self, y, t):
        gains = iter(self.gains(self.embed(t)))
        x, skips = y, []
        for block in self.encoders:
            for layer in block:
                x = layer(x, next(gains))
            skips.append(x)
        for layer in self.middle:
            x = layer(x, next(gains))
        for block in reversed(self.decoders):
            x = torch.cat([x, skips.pop()], 1)
            for layer in block:
                x = layer(x, next(gains))
        return self.out(x)
