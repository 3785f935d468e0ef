"""bench/ideal_bound_excess.py (docs/fashion-mnist.md, section 0): the closed-form excess of the dequantized bound."""
import importlib.util
import math
from pathlib import Path

import torch

_spec = importlib.util.spec_from_file_location("ideal", Path(__file__).parents[1] / "bench" / "ideal_bound_excess.py")
ideal = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ideal)
D = ideal.D


def test_box_mass_matches_monte_carlo_and_its_limits():
    g = torch.Generator().manual_seed(0)
    for t in (1e-7, 1e-6, 1e-5):
        y = (torch.rand(400_000, generator=g, dtype=torch.float64) - 0.5) * D \
            + math.sqrt(t) * torch.randn(400_000, generator=g, dtype=torch.float64)
        mc = float((y.abs() < D / 2).double().mean())
        assert abs(ideal.mass_in_bin(t, "box") - mc) < 4e-3
    # sigma << bin: nearly all mass stays in; the spill is sigma / D * sqrt(2 / pi) to first order
    t = 1e-9
    spill = math.sqrt(t) / D * math.sqrt(2 / math.pi)
    assert abs((1 - ideal.mass_in_bin(t, "box")) - spill) < 0.05 * spill
    assert ideal.mass_in_bin(1e-6, "grid") == math.erf(D / 2 / math.sqrt(2e-6))


def test_densities_integrate_to_their_bin_mass():
    for mode in ("grid", "box"):
        y = torch.linspace(-D / 2, D / 2, 20_001, dtype=torch.float64)
        inside = float(torch.trapezoid(ideal.density(y, 3e-7, mode), y))
        assert abs(inside - ideal.mass_in_bin(3e-7, mode)) < 1e-4


def test_k_draw_bound_is_above_its_limit_and_tightens_with_k():
    for mode in ("grid", "box"):
        limit = -math.log2(ideal.mass_in_bin(1e-6, mode))
        b1, b4, b64 = (ideal.k_draw_bound(1e-6, mode, k, 20_000) for k in (1, 4, 64))
        assert b1 >= b4 - 1e-3 >= b64 - 2e-3 >= limit - 3e-3
        assert b64 - limit < 0.02
