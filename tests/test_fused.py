"""The fused GainNorm + GELU node (nn/fused.py): same function, first and second derivatives as plain autograd."""
import copy

import pytest
import torch

from dsmctl.nn.energy import EnergyModel
from dsmctl.nn.fused import norm_gelu
from dsmctl.nn.unet import GainNorm, UNet
from dsmctl.engine.objectives import score_matching_loss


def reference(u, gain, eps=1e-5):
    return GainNorm(eps, fused=False)(u, gain, gelu=True)


def inputs(gen, shape=(2, 3, 4, 5)):
    u = (torch.randn(shape, generator=gen, dtype=torch.float64) + 0.7).requires_grad_()  # nonzero channel means
    gain = torch.randn(shape[:2], generator=gen, dtype=torch.float64).requires_grad_()
    return u, gain


def test_forward_matches_reference(gen):
    u, gain = inputs(gen)
    assert torch.allclose(norm_gelu(u, gain), reference(u, gain), rtol=1e-12, atol=1e-12)


def test_first_and_second_derivatives_are_exact(gen):
    u, gain = inputs(gen)
    assert torch.autograd.gradcheck(norm_gelu, (u, gain))
    assert torch.autograd.gradgradcheck(norm_gelu, (u, gain))


def test_double_backward_matches_reference(gen):
    """A loss on the first derivatives (what dual score matching trains) has the same gradients."""
    u, gain = inputs(gen, (3, 4, 3, 3))
    w = torch.randn(u.shape, generator=gen, dtype=torch.float64)
    results = []
    for fn in (norm_gelu, reference):
        h = fn(u, gain)
        du, dgain = torch.autograd.grad((h * w).sum() + h.square().sum(), (u, gain), create_graph=True)
        loss = du.pow(3).sum() + (dgain * torch.arange(12.0).reshape(3, 4)).sum() + (h * du).sum()
        results.append(torch.autograd.grad(loss, (u, gain)))
    for a, b in zip(*results):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-10)


def test_unet_training_gradients_match_reference(gen):
    """The whole dual-score-matching loss: parameter gradients with the fused node = with plain autograd."""
    torch.manual_seed(0)
    fused = EnergyModel(UNet(1, (4, 8), 8, 2, "logt")).double()
    plain = copy.deepcopy(fused)
    for m in plain.modules():
        if isinstance(m, GainNorm):
            m.fused = False
    x = torch.rand(3, 1, 8, 8, generator=gen, dtype=torch.float64)
    z = torch.randn(3, 1, 8, 8, generator=gen, dtype=torch.float64)
    t = torch.tensor([1e-3, 0.1, 10.0], dtype=torch.float64)
    grads = []
    for model in (fused, plain):
        loss, _ = score_matching_loss(model, x, t, z, "dual")
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert (grads[0] - grads[1]).norm() <= 1e-10 * grads[1].norm()


def test_channels_last_gives_the_same_result(gen):
    u, gain = inputs(gen, (2, 4, 6, 6))
    h = norm_gelu(u, gain)
    du = torch.autograd.grad(h.square().sum(), u)[0]
    u_cl = u.detach().to(memory_format=torch.channels_last).requires_grad_()
    h_cl = norm_gelu(u_cl, gain)
    assert torch.allclose(h_cl, h, rtol=1e-12, atol=1e-12)
    assert torch.allclose(torch.autograd.grad(h_cl.square().sum(), u_cl)[0], du, rtol=1e-10, atol=1e-12)


def test_third_derivatives_are_refused_by_backward(gen):
    """Not supported (nothing here needs them); .backward() through a third derivative raises."""
    u, gain = inputs(gen)
    h = norm_gelu(u, gain)
    du = torch.autograd.grad(h.square().sum(), u, create_graph=True)[0]
    ddu = torch.autograd.grad(du.pow(3).sum(), u, create_graph=True)[0]
    with pytest.raises(RuntimeError, match="once_differentiable"):
        ddu.sum().backward()
