"""What every model and closed-form density returns: EnergyOutput, and the argument helpers of model(y, t, need)."""
from dataclasses import dataclass

import torch

NEEDS = ("energy", "grad_y", "grad_t", "denoised")


@dataclass
class EnergyOutput:
    y: torch.Tensor
    t: torch.Tensor  # (B,) per-image noise variance
    energy: torch.Tensor | None = None  # (B,)
    grad_y: torch.Tensor | None = None  # like y
    grad_t: torch.Tensor | None = None  # (B,)

    @property
    def denoised(self):
        return self.y - expand_as(self.t, self.y) * self.grad_y


def expand_as(t, y):
    """(B,) -> (B, 1, ..., 1) broadcastable against y."""
    return t.reshape(-1, *([1] * (y.dim() - 1)))


def as_batch_t(t, y):
    """Accept a float or a (B,) / (1,) tensor of noise variances; return (B,) in y's dtype/device."""
    t = torch.as_tensor(t, dtype=y.dtype, device=y.device)
    return t.expand(y.shape[0]).contiguous() if t.numel() == 1 else t.reshape(y.shape[0])


def parse_need(need):
    need = {need} if isinstance(need, str) else set(need)
    unknown = need - set(NEEDS)
    if unknown:
        raise ValueError(f"unknown need {sorted(unknown)}; expected a subset of {NEEDS}")
    if "denoised" in need:
        need = (need - {"denoised"}) | {"grad_y"}
    return need
