"""The energy wrapper: derivatives by autograd equal finite differences; the paper's UNet size."""
import pytest
import torch

from dsmctl.nn.build import build_model, count_parameters
from dsmctl.nn.energy import DenoiserModel, EnergyModel
from dsmctl.nn.unet import UNet
from dsmctl.recipe import Model


def small_energy(embedding="paper"):
    torch.manual_seed(0)
    return EnergyModel(UNet(1, (4, 8), 8, 2, embedding)).double()


def test_paper_unet_has_8649856_parameters():
    assert count_parameters(build_model(Model(), (3, 64, 64))) == 8_649_856


def test_paper_unet_is_bias_free_and_gelu():
    net = UNet()
    for m in net.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            assert m.bias is None


@pytest.mark.parametrize("embedding", ["paper", "logt"])
def test_grads_match_finite_differences(embedding, gen):
    model = small_energy(embedding)
    y = torch.randn(2, 1, 8, 8, generator=gen, dtype=torch.float64)
    t = torch.tensor([0.05, 0.7], dtype=torch.float64)
    out = model(y, t, need=("energy", "grad_y", "grad_t"))
    h = 1e-6
    for idx in [(0, 0, 0, 0), (0, 0, 3, 5), (1, 0, 7, 7), (1, 0, 2, 1)]:
        e = torch.zeros_like(y)
        e[idx] = h
        fd = (model(y + e, t).energy - model(y - e, t).energy) / (2 * h)
        assert fd[idx[0]].item() == pytest.approx(out.grad_y[idx].item(), rel=1e-5, abs=1e-8)
    fd_t = (model(y, t + h).energy - model(y, t - h).energy) / (2 * h)
    assert torch.allclose(out.grad_t, fd_t, rtol=1e-5, atol=1e-8)


def test_grad_t_is_partial_even_if_y_depends_on_t(gen):
    """Field note: y built from a t that requires grad must still give the partial dU/dt."""
    model = small_energy()
    x = torch.randn(2, 1, 8, 8, generator=gen, dtype=torch.float64)
    z = torch.randn(2, 1, 8, 8, generator=gen, dtype=torch.float64)
    t = torch.tensor([0.1, 0.5], dtype=torch.float64, requires_grad=True)
    y = x + t.sqrt()[:, None, None, None] * z  # depends on t
    partial = model(y.detach(), t.detach(), need=("grad_t",)).grad_t
    out = model(y, t, need=("grad_y", "grad_t"))
    assert torch.allclose(out.grad_t, partial)


def test_energy_is_half_inner_product(gen):
    model = small_energy()
    y = torch.randn(3, 1, 8, 8, generator=gen, dtype=torch.float64)
    t = torch.full((3,), 0.2, dtype=torch.float64)
    f = model.net(y, t)
    assert torch.allclose(model(y, t).energy, 0.5 * (y * f).sum((1, 2, 3)))


def test_denoised_is_tweedie(gen):
    model = small_energy()
    y = torch.randn(2, 1, 8, 8, generator=gen, dtype=torch.float64)
    out = model(y, 0.3, need=("denoised",))
    assert torch.allclose(out.denoised, y - 0.3 * out.grad_y)


def test_training_graph_gives_parameter_grads(gen):
    """create_graph=True: a loss on grad_y and grad_t reaches every parameter (needed for DDP)."""
    model = small_energy()
    y = torch.randn(2, 1, 8, 8, generator=gen, dtype=torch.float64)
    out = model(y, torch.tensor([0.1, 1.0], dtype=torch.float64), need=("grad_y", "grad_t"), create_graph=True)
    (out.grad_y.square().sum() + out.grad_t.square().sum()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []


def test_denoiser_twin_has_no_energy(gen):
    torch.manual_seed(0)
    model = DenoiserModel(UNet(1, (4, 8), 8, 2))
    y = torch.randn(2, 1, 8, 8, generator=gen)
    out = model(y, 0.1, need=("denoised",))
    assert out.denoised.shape == y.shape and out.energy is None
    with pytest.raises(ValueError):
        model(y, 0.1, need=("energy",))


def test_gaussian_base_starts_as_the_fitted_gaussian_and_roundtrips(tmp_path, gen):
    """model.base gaussian: at initialization the energy (and its derivatives) is the Gaussian's."""
    from dsmctl.nn.model_file import load_model, save_model
    from dsmctl.nll.likelihood import fit_anchor
    from dsmctl.recipe import load_recipe

    x = torch.rand(300, 1, 8, 8, generator=gen)
    gauss = fit_anchor(x)
    recipe = load_recipe(raw={"model": {"widths": [4, 8], "mid_width": 8, "layers_per_block": 2, "base": "gaussian"}})
    model = build_model(recipe.model, (1, 8, 8)).double()
    model.base.set_gaussian(gauss)
    y = x[:3].double()
    t = torch.tensor([1e-6, 0.01, 3.0], dtype=torch.float64)
    a = model(y, t, need=("energy", "grad_y", "grad_t"))
    b = gauss(y, t, need=("energy", "grad_y", "grad_t"))
    for k in ("energy", "grad_y", "grad_t"):
        assert torch.allclose(getattr(a, k), getattr(b, k), rtol=1e-9, atol=1e-9)
    save_model(tmp_path / "m.safetensors", model, {"recipe": recipe.to_dict(), "shape": [1, 8, 8]})
    loaded, _ = load_model(tmp_path / "m.safetensors")
    assert torch.allclose(loaded(y.float(), t.float()).energy.double(), a.energy, rtol=1e-4)


def test_gaussian_base_accepts_a_low_rank_fit(gen):
    """Fewer training images than dimensions (e.g. generalize with N = 10): the base is the low-rank fit,
    its floor variance on the complement of the images' span, and equals the fitted density exactly."""
    from dsmctl.nll.likelihood import fit_anchor
    from dsmctl.recipe import load_recipe

    x = torch.rand(10, 1, 8, 8, generator=gen)
    gauss = fit_anchor(x, min_var=1e-4)
    assert gauss.rank < 64
    recipe = load_recipe(raw={"model": {"widths": [4, 8], "mid_width": 8, "layers_per_block": 2, "base": "gaussian"}})
    model = build_model(recipe.model, (1, 8, 8)).double()
    model.base.set_gaussian(gauss)
    y = torch.cat([x[:2], torch.rand(2, 1, 8, 8, generator=gen)]).double()  # two training images, two others
    t = torch.tensor([1e-6, 0.01, 3.0, 0.0], dtype=torch.float64)
    a = model(y, t, need=("energy", "grad_y", "grad_t"))
    b = gauss(y, t, need=("energy", "grad_y", "grad_t"))
    for k in ("energy", "grad_y", "grad_t"):
        assert torch.allclose(getattr(a, k), getattr(b, k), rtol=1e-8, atol=1e-8), k
    with pytest.raises(ValueError, match="floor"):
        model.base.set_gaussian(type(gauss)(gauss.shape, gauss.mean, gauss.eigvecs, gauss.eigvals, floor=0.0))


def test_paper_embedding_of_raw_t_is_smooth_down_to_t_zero():
    """The paper's embedding is of the raw variance t (method notes: phi(t) = [cos(w_k t), sin(w_k t)], w_k 1 .. 0.01):
    at t = 0, 1e-12, 1e-9 it is finite, continuous (within t * its slope of emb(0)), and its t-derivative is the chain
    rule at phi(0) = [1, 0]: J_mlp(phi(0)) [-w sin 0, w cos 0] = J_mlp(phi(0)) [0, w]. An embedding of log t has a
    slope ~1/(t + 1e-9) there, a billion times larger."""
    from dsmctl.nn.unet import NoiseEmbedding

    torch.manual_seed(0)
    emb = NoiseEmbedding("paper").double()
    w = torch.logspace(0, -2, 32, dtype=torch.float64)
    phi0 = torch.cat([torch.ones(32, dtype=torch.float64), torch.zeros(32, dtype=torch.float64)])
    slope0 = torch.func.jvp(emb.mlp, (phi0,), (torch.cat([torch.zeros_like(w), w]),))[1]
    assert torch.isfinite(slope0).all() and 0 < slope0.abs().max() < 10
    ts = torch.tensor([0.0, 1e-12, 1e-9], dtype=torch.float64)
    values, slopes = torch.func.jvp(emb, (ts,), (torch.ones_like(ts),))
    assert torch.isfinite(values).all() and torch.isfinite(slopes).all()
    assert torch.allclose(values[0], emb.mlp(phi0), rtol=0, atol=1e-15)  # phi(0) = [cos 0, sin 0]
    for k, t in enumerate(ts.tolist()):
        assert torch.allclose(slopes[k], slope0, rtol=1e-6, atol=1e-8), t  # the module keeps w in float32
        assert (values[k] - values[0]).abs().max() <= 1.01 * t * slope0.abs().max() + 1e-15, t


def test_paper_embedding_energy_has_finite_continuous_t_derivative_at_zero(gen):
    """The whole energy with the paper embedding: U and dU/dt finite at t = 0, 1e-12, 1e-9, and dU/dt the same there
    (to 1e-6 relative): the network treats t -> 0 as a smooth limit, not a singular point."""
    model = small_energy("paper")
    y = torch.randn(2, 1, 8, 8, generator=gen, dtype=torch.float64)
    outs = [model(y, torch.full((2,), t, dtype=torch.float64), need=("energy", "grad_t")) for t in (0.0, 1e-12, 1e-9)]
    for o in outs:
        assert torch.isfinite(o.energy).all() and torch.isfinite(o.grad_t).all()
    g0 = outs[0].grad_t
    assert g0.abs().min() > 0
    for o, t in zip(outs[1:], (1e-12, 1e-9)):
        assert torch.allclose(o.grad_t, g0, rtol=1e-6, atol=0)
        assert torch.allclose(o.energy - outs[0].energy, t * g0, rtol=1e-3, atol=1e-14)
