"""The one-shot estimator (the paper's protocol): -log p_t = U(x + sqrt(t) z, t) + c, one forward pass per image."""
import time

from .. import units
from .likelihood import one_shot_nll
from .request import Estimate


def estimate(model, data, request):
    """request: resolved (t, t_max, anchor, batch_size, seed, constant); device from request.device."""
    t0 = time.time()
    res, idx, nll = one_shot_nll(model, data, t=request.t, t_max=request.t_max, anchor=request.anchor,
                                 batch_size=request.batch_size, seed=request.seed, device=request.device,
                                 constant=request.constant, return_per_image=True)
    return Estimate(res, idx, nll, time.time() - t0, protocol(res))


def baseline(density, data, request, device=None, return_per_image=False):
    """The same protocol on a closed-form density (exact, no constant): the Gaussian baseline, the truth."""
    return one_shot_nll(density, data, t=request.t, t_max=request.t_max, anchor="exact", batch_size=request.batch_size,
                        seed=request.seed, device=device, constant=(0.0, 0.0), return_per_image=return_per_image)


def protocol(r):
    quant = f"+{r.quantization_bits} bits/dim for {r.quantization_bits}-bit data" if r.quantization_bits else "continuous (no +8)"
    return (f"one-shot NLL at t={r.t:g} (PSNR {units.t_to_psnr(r.t):.1f} dB), constant c={r.constant:.6g}"
            f"±{r.constant_stderr:.2g} nats at t_max={r.t_max:g} ({r.anchor} anchor), {r.n_images} images of "
            f"{r.data} (fingerprint {r.data_fingerprint}), noise seed {r.seed}, {quant}")


def label(r):
    """What the one-shot number is, in words: on 8-bit data at t = 0 the paper's plug-in, not a bound."""
    if r.quantization_bits and r.t == 0:
        return ("the paper's protocol: plug-in density at the 8-bit grid point times the bin volume; not a bound on "
                "the discrete NLL")
    return "one-shot cross-entropy of the noisy images (a continuous density)"
