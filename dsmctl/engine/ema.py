"""Exponential moving average of the weights (optional; the paper trains without it).

Warm-up: the k-th update uses decay min(decay, (1 + k) / (10 + k)), so the average is not dominated
by the random initialization early in a run (0.1 at the first update, 0.5 after 8, 0.9 after 80).
The shadow weights are fp32 and live on the training device; every process keeps the same copy.
"""
import torch


class EMA:
    def __init__(self, model, decay, updates=0):
        self.decay, self.updates = float(decay), int(updates)
        self.shadow = {name: p.detach().float().clone() for name, p in model.named_parameters()}

    def rate(self):
        k = self.updates
        return min(self.decay, (1 + k) / (10 + k))

    @torch.no_grad()
    def update(self, model):
        rate = self.rate()
        for name, p in model.named_parameters():
            self.shadow[name].lerp_(p.detach().float(), 1 - rate)
        self.updates += 1

    def state_dict(self, model):
        """A full model state dict (loadable by the model) with the parameters replaced by their average."""
        state = model.state_dict()
        return {k: (self.shadow[k].to(v.dtype) if k in self.shadow else v).detach().cpu().contiguous()
                for k, v in state.items()}

    def load(self, tensors, updates):
        missing = sorted(set(self.shadow) - set(tensors))
        if missing:
            raise KeyError(f"EMA weights lack {missing[:3]}")
        for name, value in self.shadow.items():
            value.copy_(tensors[name])
        self.updates = int(updates)

    def info(self):
        return {"decay": self.decay, "updates": self.updates}
