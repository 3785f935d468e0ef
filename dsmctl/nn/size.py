"""What a model section costs, computed from the recipe alone (nothing is allocated): parameters and the
activations of one forward pass per example. tests/test_hardening.py checks both against real models."""
EMB_DIM, N_FREQ = 256, 32  # NoiseEmbedding / NoiseGains defaults in nn/unet.py


def unet_layers(channels, widths, mid_width, layers_per_block):
    """(cin, cout, kind, downsampling of the output) of every Layer, in forward order (as UNet builds them)."""
    L, W, out = layers_per_block, list(widths), []
    for i, w in enumerate(W):
        out.append((channels, w, "conv", 0) if i == 0 else (W[i - 1], w, "down", i))
        out += [(w, w, "conv", i)] * (L - 1)
    n = len(W)
    out.append((W[-1], mid_width, "down", n))
    out += [(mid_width, mid_width, "conv", n)] * (L - 2)
    out.append((mid_width, W[-1], "up", n - 1))
    for i in reversed(range(n)):
        out.append((2 * W[i], W[i], "conv", i))
        out += [(W[i], W[i], "conv", i)] * (L - 2)
        if i > 0:
            out.append((W[i], W[i - 1], "up", i - 1))
    return out


def model_size(cfg, shape):
    """(parameters, activations per example) of recipe.Model `cfg` on examples of `shape`.

    Activations: the elements output by every leaf module on one forward pass (what engine/dryrun.py turns
    into a memory estimate)."""
    cfg = cfg if isinstance(cfg, dict) else vars(cfg)
    shape = tuple(shape)
    if cfg["kind"] == "radial":
        h, depth, k = cfg["radial_hidden"], cfg["radial_depth"], cfg["radial_components"]
        width = h if depth else 1
        params = (2 * h + (depth - 1) * (h * h + h) if depth else 0) + width * 2 * k + 2 * k
        return params, 2 * h * depth + 2 * k
    c, height, width = shape
    layers = unet_layers(c, cfg["widths"], cfg["mid_width"], cfg["layers_per_block"])
    params = (2 * N_FREQ * EMB_DIM + EMB_DIM) + (EMB_DIM * EMB_DIM + EMB_DIM)  # the noise embedding's MLP
    acts = 4 * EMB_DIM
    gain_channels = 0
    for cin, cout, kind, down in layers:
        params += cin * cout * (9 if kind == "conv" else 4)
        acts += 2 * cout * (height >> down) * (width >> down)  # conv output, norm + GELU output
        gain_channels += cout
    params += cfg["widths"][0] * c * 9  # the output conv
    acts += c * height * width
    params += gain_channels * (EMB_DIM + 2)  # NoiseGains: one Linear(256, sum C) and one weight per channel
    acts += gain_channels
    if cfg["kind"] == "energy" and cfg.get("base", "none") == "gaussian":
        acts += 1  # the Gaussian base's energy
    if cfg["kind"] == "energy" and cfg.get("time_offset", "none") == "learned":
        from .energy import TimeOffset

        params += TimeOffset(1).coef.numel()  # one coefficient per knot
        acts += 1  # g(t)
    return params, acts

