"""The paper's radial energy for the Gaussian-scale-mixture experiment (Fig. 1).

U(y, t) = -logsumexp_k -(a_k(t) ||y||^2 + d b_k(t)), with (a_k, b_k) from an MLP of log(t + 1e-2).
a_k goes through a softplus so that every component stays normalizable (the paper leaves it free).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from .energy import EnergyModel


class RadialEnergy(EnergyModel):
    def __init__(self, d, components=2, hidden=256, depth=4):
        layers, width = [], 1
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.GELU()]
            width = hidden
        layers.append(nn.Linear(width, 2 * components))
        super().__init__(nn.Sequential(*layers))
        self.d = d
        self.components = components

    def coefficients(self, t):
        out = self.net(torch.log(t + 1e-2)[:, None])
        a_raw, b = out.chunk(2, dim=1)
        # Start near a unit Gaussian: a = 1/2, b = 1/2 log(2 pi).
        return F.softplus(a_raw + math.log(math.expm1(0.5))), b + 0.5 * math.log(2 * math.pi)

    def energy(self, y, t):
        a, b = self.coefficients(t)
        r2 = y.flatten(1).square().sum(1, keepdim=True)
        return -torch.logsumexp(-(a * r2 + self.d * b), dim=1)
