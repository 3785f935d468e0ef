import math

import pytest
import torch

from dsmctl import units


def test_psnr_roundtrip():
    assert units.t_to_psnr(1e-3) == pytest.approx(30.0)
    assert units.psnr_to_t(30.0) == pytest.approx(1e-3)
    assert units.t_to_psnr(0.0) == math.inf
    t = torch.tensor([1e-9, 1.0, 1e3], dtype=torch.float64)
    assert torch.allclose(units.t_to_psnr(t), torch.tensor([90.0, 0.0, -30.0], dtype=torch.float64))


def test_db_bits_relation():
    # 1 dB/dim of log-probability is log2(10)/10 bits/dim.
    assert units.nats_to_bits(units.db_to_nats(1.0)) == pytest.approx(math.log2(10) / 10)
    assert units.BITS_PER_DB == pytest.approx(0.33219, abs=1e-5)


def test_bits_per_dim_adds_quantization():
    d = 12288
    energy = 3.0 * d * math.log(2)  # 3 bits/dim of density
    assert units.bits_per_dim(energy, d) == pytest.approx(3.0)
    assert units.bits_per_dim(energy, d, 8) == pytest.approx(11.0)
    assert units.bits_per_dim_to_energy(11.0, d, 8) == pytest.approx(energy)


def test_log_p_db_per_dim_sign():
    # energy = -log p; log p in dB/dim = -10 U / (d ln 10)
    assert units.log_p_db_per_dim(100 * math.log(10), 10) == pytest.approx(-100.0)
