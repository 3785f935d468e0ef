"""Recipe model section + data shape -> model (EnergyModel, DenoiserModel or RadialEnergy)."""
import math

from torch import nn

from .energy import DenoiserModel, EnergyModel, GaussianBase, TimeOffset
from .radial import RadialEnergy
from .unet import UNet


MAX_BASE_D = 4096


class ShapeError(ValueError):
    pass


def check_shape(cfg, shape):
    """Raise ShapeError when the model section cannot be built for examples of `shape` (nothing is built)."""
    cfg = cfg if isinstance(cfg, dict) else vars(cfg)
    shape = tuple(shape)
    if cfg["kind"] == "radial":
        return
    if len(shape) != 3:
        raise ShapeError(f"model.kind {cfg['kind']} needs images (C x H x W), got examples of shape {shape}; "
                         "use model.kind radial for vectors")
    factor = 2 ** len(cfg["widths"])
    if shape[1] % factor or shape[2] % factor:
        raise ShapeError(f"image size {shape[1]}x{shape[2]} is not divisible by {factor} "
                         f"(2^{len(cfg['widths'])} for {len(cfg['widths'])} scales); change model.widths or the data size")
    if cfg["kind"] == "energy" and cfg.get("base", "none") == "gaussian" and math.prod(shape) > MAX_BASE_D:
        raise ShapeError(f"model.base gaussian keeps a d x d covariance; d = {math.prod(shape)} is above "
                         f"{MAX_BASE_D}: use model.base none")


def build_model(cfg, shape):
    """cfg: recipe.Model (or a dict of its fields); shape: one example's shape, (C, H, W) or (D,)."""
    cfg = cfg if isinstance(cfg, dict) else vars(cfg)
    shape = tuple(shape)
    check_shape(cfg, shape)
    if cfg["kind"] == "radial":
        return RadialEnergy(math.prod(shape), cfg["radial_components"], cfg["radial_hidden"], cfg["radial_depth"])
    net = UNet(shape[0], cfg["widths"], cfg["mid_width"], cfg["layers_per_block"], cfg["embedding"])
    if cfg["kind"] == "denoiser":
        return DenoiserModel(net)
    offset = TimeOffset(math.prod(shape)) if cfg.get("time_offset", "none") == "learned" else None
    if cfg.get("base", "none") == "gaussian":
        nn.init.zeros_(net.out.weight)  # start from the Gaussian itself
        return EnergyModel(net, GaussianBase(shape), offset)
    return EnergyModel(net, offset=offset)


def count_parameters(model):
    return sum(p.numel() for p in model.parameters())
