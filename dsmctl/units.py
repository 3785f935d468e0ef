"""Unit conversions. Every number dsmctl prints goes through here.

Conventions: t is the per-pixel noise variance, sigma = sqrt(t), PSNR = -10 log10(t) dB for pixels
in [0, 1]. Energies are in nats per image, U = -log p. Per-dimension figures divide by d = C*H*W.
"""
import math

LN2 = math.log(2.0)
LN10 = math.log(10.0)
BITS_PER_DB = math.log2(10.0) / 10.0  # 1 dB/dim of log-probability = 0.332 bit/dim
# The largest noise variance accepted anywhere (PSNR -120 dB, sigma 1e6 for pixels in [0, 1]): t and t^2 stay far
# inside float32's range (3.4e38), so energies and their derivatives at every accepted t are finite numbers.
T_LIMIT = 1e12


def check_t(t, label, positive=False):
    """t as a float when it is a finite noise variance in [0, T_LIMIT] ((0, T_LIMIT] with positive=True), else
    ValueError("LABEL: expected ..."). The one check of a noise level: the CLI's options, recipes and the API."""
    try:
        value = math.nan if isinstance(t, (bool, str, bytes)) else float(t)
    except (TypeError, ValueError, OverflowError):
        value = math.nan
    if not (math.isfinite(value) and (value > 0 if positive else value >= 0) and value <= T_LIMIT):
        what = "a positive finite noise variance of at most" if positive else "a finite noise variance in [0,"
        raise ValueError(f"{label}: expected {what} {T_LIMIT:g}{'' if positive else ']'} (PSNR "
                         f"{t_to_psnr(T_LIMIT):g} dB; beyond it float32 arithmetic overflows)")
    return value


def t_to_sigma(t):
    return t ** 0.5


def sigma_to_t(sigma):
    return sigma ** 2


def t_to_psnr(t):
    """Noise variance -> PSNR in dB (for signals in [0, 1])."""
    if isinstance(t, (int, float)):
        return math.inf if t == 0 else -10.0 * math.log10(t)
    return -10.0 * t.log10()


def psnr_to_t(psnr):
    return 10.0 ** (-psnr / 10.0)


def nats_to_bits(nats):
    return nats / LN2


def bits_to_nats(bits):
    return bits * LN2


def nats_to_db(nats):
    """A log-probability in nats -> decibels (10 log10)."""
    return 10.0 * nats / LN10


def db_to_nats(db):
    return db * LN10 / 10.0


def energy_to_log_p(energy):
    return -energy


def log_p_db_per_dim(energy, d):
    """Energy (nats per image) -> log-probability in dB/dim, -10 U / (d ln 10)."""
    return -nats_to_db(energy) / d


def nats_per_dim(energy, d):
    return energy / d


def bits_per_dim(energy, d, quantization_bits=None):
    """Energy (nats per image, a density in [0,1]^d) -> NLL in bits/dim.

    For b-bit data each pixel's bin has width 2^-b, so the discrete NLL of the bin is the density NLL
    plus b bits per dimension (the paper's +8 for 8-bit images). Continuous data: quantization_bits=None.
    """
    bits = nats_to_bits(energy) / d
    return bits + quantization_bits if quantization_bits else bits


def bits_per_dim_to_energy(bpd, d, quantization_bits=None):
    bpd = bpd - quantization_bits if quantization_bits else bpd
    return bits_to_nats(bpd) * d
