"""Numerical precision: true fp32 by default, optional TF32, optional bf16 autocast with fp32 islands.

fp32 (the paper): matmuls and convolutions in IEEE fp32. PyTorch's own default lets cuDNN use TF32
for convolutions, which rounds inputs to 10 mantissa bits; we turn that off unless the recipe asks
for `tf32`.

bf16: the convolutions run in bf16 under autocast, but the parts that the energy gradients are most
sensitive to stay in fp32: the noise embedding (grad_t flows through it), the normalization
statistics and gains (NoiseGains), the last convolution (f itself, which enters U = 1/2 <y, f> and grad_y
directly), and the energy reduction and losses (computed from fp32 y). The radial model runs
entirely in fp32 (d * b_k(t) would lose whole nats in bf16). This module does not import accelerate.
"""
import contextlib
import functools

import torch

PRECISIONS = ("fp32", "tf32", "bf16")


def set_fp32_precision(allow_tf32):
    """Process-wide: may fp32 matmuls/convolutions on CUDA use TF32?"""
    mode = "tf32" if allow_tf32 else "ieee"
    torch.backends.cuda.matmul.fp32_precision = mode
    torch.backends.cudnn.conv.fp32_precision = mode


@contextlib.contextmanager
def exact_fp32():
    """TF32 off inside (evaluation: normalization constants and NLLs), previous settings restored after."""
    before = torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    set_fp32_precision(False)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = before


def autocast(device, precision):
    """bf16 autocast context for the training forward/double backward, or a no-op."""
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def _in_fp32(forward):
    @functools.wraps(forward)
    def run(*args, **kwargs):
        device = next((a.device.type for a in args if torch.is_tensor(a)), "cpu")
        args = [a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args]
        with torch.autocast(device, enabled=False):
            return forward(*args, **kwargs)

    run.dsmctl_fp32 = True
    return run


def keep_fp32(model):
    """Make the precision-critical submodules of `model` ignore bf16 autocast; returns their names."""
    from ..nn.radial import RadialEnergy
    from ..nn.unet import GainNorm, NoiseEmbedding, NoiseGains, UNet

    names = []
    for name, module in model.named_modules():
        targets = [(name, module)] if isinstance(module, (RadialEnergy, NoiseEmbedding, NoiseGains, GainNorm)) else []
        if isinstance(module, UNet):
            targets.append((f"{name}.out".lstrip("."), module.out))
        for target_name, target in targets:
            if not getattr(target.forward, "dsmctl_fp32", False):
                target.forward = _in_fp32(target.forward)
                names.append(target_name or type(target).__name__)
    return names
