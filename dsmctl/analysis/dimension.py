"""Local effective dimensionality (paper Fig. 5) and the mean log-probability around each image.

    d_eff(x, t) = E_z ||x - D(x + sqrt(t) z, t)||^2 / t,   D(y, t) = y - t grad_y U(y, t)
    E_z log p_t(x + sqrt(t) z) = -E_z [U(x + sqrt(t) z, t) + c]
For x ~ N(mu, S) the dataset mean of d_eff is sum_i lambda_i / (lambda_i + t) (S's eigenvalues lambda_i);
per image it is t ||(S + tI)^-1 (x - mu)||^2 + sum_i lambda_i^2 / (lambda_i + t)^2.
The K draws z_k are keyed by (seed, k, dataset index) and shared by every t (common random numbers: the
curves are smooth in t). Standard errors are over the K draws.
"""
import math

import torch

from .. import units
from ..data.arrays import ArrayData
from ..fileio import write_rows
from ..recipe_yaml import show
from ..rng import indexed_normal

DIM_STREAM = 10_000  # draw k uses rng stream DIM_STREAM + k


MAX_T_GRID = 10_000  # noise levels; each costs n_images x draws forward passes


def parse_t_grid(text, max_points=MAX_T_GRID):
    """'1e-8:1e1:19' (log-spaced, both ends included) or '1e-6,1e-3,1' -> list of floats (at most max_points)."""
    text = str(text).strip()
    try:
        if ":" in text:
            lo, hi, n = text.split(":")
            lo, hi, n = float(lo), float(hi), int(n)
            if not (math.isfinite(lo) and math.isfinite(hi)) or lo <= 0 or hi <= lo or n < 1:
                raise ValueError
        else:
            grid = [float(v) for v in text.split(",") if v.strip()]
            n = len(grid)
            if not grid or any(not math.isfinite(v) or v <= 0 for v in grid):
                raise ValueError
    except ValueError:
        raise ValueError(f"--t-grid {show(text)}: expected LO:HI:N (log-spaced, 0 < LO < HI finite, N >= 1) or a comma "
                         "list of positive noise variances") from None
    if n > max_points:
        raise ValueError(f"--t-grid {show(text)}: {n:,} noise levels, expected at most {max_points:,} (each costs "
                         "one forward pass per image and draw)")
    for v in ((lo, hi) if ":" in text else grid):
        units.check_t(v, f"--t-grid {show(text)}: {v:g}", positive=True)
    if ":" not in text:
        return grid
    return [lo] if n == 1 else [math.exp(math.log(lo) + i * (math.log(hi) - math.log(lo)) / (n - 1)) for i in range(n)]


def dimension_profile(model, data, t_grid, draws=100, batch_size=256, seed=0, device=None, dtype=torch.float32,
                      constant=None, with_energy=True, progress=None):
    """Per-image d_eff and E_z log p_t over t_grid.

    Returns {"indices": (N,), "t": (T,), "d_eff": (N, T), "d_eff_stderr": (N, T),
             "energy": (N, T) mean normalized energy U + c in nats (None without energy)}.
    constant: the normalization constant c (nats); None leaves the energies unnormalized (c = 0).
    """
    data = ArrayData.wrap(data)
    T, N = len(t_grid), len(data)
    c = 0.0 if constant is None else float(constant)
    d_sum = torch.zeros(N, T, dtype=torch.float64)
    d_sq = torch.zeros(N, T, dtype=torch.float64)
    u_sum = torch.zeros(N, T, dtype=torch.float64)
    need = ("energy", "grad_y") if with_energy else ("grad_y",)
    n_img = max(1, min(N, batch_size // max(1, draws)))  # images per chunk; draws split if K > batch
    k_chunk = max(1, min(draws, batch_size // n_img))
    all_idx = []
    done = 0
    for start in range(0, N, n_img):
        pos = list(range(start, min(N, start + n_img)))
        idx = data.index(pos)
        all_idx.append(torch.as_tensor(idx))
        x = data.batch(pos, device, dtype)
        nb = len(pos)
        for k0 in range(0, draws, k_chunk):
            ks = range(k0, min(draws, k0 + k_chunk))
            z = torch.stack([indexed_normal(idx, data.shape, seed, DIM_STREAM + k, dtype, device) for k in ks])
            xs = x.unsqueeze(0).expand(len(ks), *x.shape).reshape(-1, *data.shape)
            zf = z.reshape(-1, *data.shape)
            for j, t in enumerate(t_grid):
                out = model(xs + math.sqrt(t) * zf, t, need=need)
                err = (xs - out.denoised.detach()).flatten(1).square().sum(1).double().cpu() / t
                err = err.reshape(len(ks), nb)
                d_sum[start:start + nb, j] += err.sum(0)
                d_sq[start:start + nb, j] += err.square().sum(0)
                if with_energy:
                    u_sum[start:start + nb, j] += out.energy.detach().double().cpu().reshape(len(ks), nb).sum(0)
        done += nb
        if progress:
            progress(done, N)
    mean = d_sum / draws
    var = (d_sq / draws - mean.square()).clamp_min(0) * draws / max(draws - 1, 1)
    return {"indices": torch.cat(all_idx), "t": torch.tensor(t_grid, dtype=torch.float64), "d_eff": mean,
            "d_eff_stderr": (var / draws).sqrt(), "energy": u_sum / draws + c if with_energy else None,
            "normalized": constant is not None, "draws": draws, "seed": seed, "d": data.d}


def profile_rows(prof):
    """Flat rows keyed by (dataset index, t): d_eff, its stderr, E_z log p_t in dB/dim and nats."""
    rows, d = [], prof["d"]
    for i, index in enumerate(prof["indices"].tolist()):
        for j, t in enumerate(prof["t"].tolist()):
            row = {"index": index, "t": t, "psnr": units.t_to_psnr(t), "d_eff": prof["d_eff"][i, j].item(),
                   "d_eff_stderr": prof["d_eff_stderr"][i, j].item()}
            if prof["energy"] is not None:
                u = prof["energy"][i, j].item()
                row["energy"] = u
                row["log_p_db_per_dim"] = units.log_p_db_per_dim(u, d)
            rows.append(row)
    return rows


def dataset_means(prof):
    """Dataset mean per t of d_eff and of E_z log p_t (dB/dim)."""
    out = []
    for j, t in enumerate(prof["t"].tolist()):
        row = {"t": t, "psnr": units.t_to_psnr(t), "d_eff": prof["d_eff"][:, j].mean().item()}
        if prof["energy"] is not None:
            row["log_p_db_per_dim"] = units.log_p_db_per_dim(prof["energy"][:, j].mean().item(), prof["d"])
        out.append(row)
    return out


def run(ckpt, t_grid=None, draws=100, n_images=16, source=None, split=None, batch_size=None, seed=None, device=None,
        out=None, plot=None, plot_images=None, log=None):
    """dsmctl dimension: profile the first n_images of the evaluation split; write rows, means and a plot."""
    from ..nn.model_file import load_model
    from ..device import resolve_device
    from ..nll.evaluate import open_eval_data
    from ..nll.likelihood import normalization_constant

    device = resolve_device(device)
    model, meta = load_model(ckpt, device)
    rec = meta["recipe"]
    if t_grid is None:  # the trained range, two points per decade
        lo, hi = rec["noise"]["t_min"], rec["noise"]["t_max"]
        t_grid = parse_t_grid(f"{lo}:{hi}:{max(2, round(2 * math.log10(hi / lo)) + 1)}")
    data, _, _ = open_eval_data(meta, source, split, n_images)
    outside = sorted({p for p in plot_images or () if not 0 <= p < len(data)})
    if outside:  # before the work: the split may hold fewer images than asked for
        raise ValueError(f"--images {','.join(map(str, outside))}: out of range; expected positions "
                         f"0..{len(data) - 1} of the {len(data)} evaluated images")
    ev = rec["eval"]
    batch_size, seed = batch_size or ev["batch_size"], ev["seed"] if seed is None else seed
    with_energy = rec["model"]["kind"] != "denoiser"
    constant, norm_text = None, "no energy (denoiser): d_eff only"
    if with_energy:
        norm = meta.get("normalization")
        if norm:
            constant = norm["constant"]
            norm_text = f"stored constant {norm['constant']:.6g} nats ({norm['anchor']} anchor, t_max {norm['t_max']:g})"
        else:
            constant, _ = normalization_constant(model, data, ev["t_max"], ev["anchor"], batch_size, seed, device)
            norm_text = f"constant {constant:.6g} nats fixed on these images ({ev['anchor']} anchor, t_max {ev['t_max']:g})"
    prof = dimension_profile(model, data, t_grid, draws, batch_size, seed, device, constant=constant,
                             with_energy=with_energy,
                             progress=(lambda k, n: log(f"[dimension] {k}/{n} images")) if log else None)
    rows, means = profile_rows(prof), dataset_means(prof)
    res = {"model": str(ckpt), "t": prof["t"].tolist(), "dataset_mean": means, "n_images": len(data), "d": data.d,
           "protocol": f"d_eff = E_z||x - D(x + sqrt(t) z, t)||^2 / t and E_z log p_t, {draws} draws per image keyed by "
                       f"dataset index (seed {seed}), shared across t; {len(data)} images of {data.name} "
                       f"(fingerprint {data.fingerprint}); {norm_text}"}
    if out:
        write_rows(out, rows)
        res["out"] = str(out)
    if plot:
        from ..nll.report import model_label

        res["plot"] = str(plot_profile(prof, plot, plot_images, title=f"{model_label(ckpt)}: {data.name}, {draws} draws"))
    return res


def summary_text(res):
    """The dataset means per t as a table, and the protocol."""
    lines = [f"{'t':>10} {'PSNR':>7} {'d_eff':>9} {'log p_t':>9}   (dataset mean; d = {res['d']}, log p in dB/dim)"]
    for m in res["dataset_mean"]:
        lp = f"{m['log_p_db_per_dim']:9.3f}" if "log_p_db_per_dim" in m else f"{'-':>9}"
        lines.append(f"{m['t']:10.3g} {m['psnr']:7.1f} {m['d_eff']:9.2f} {lp}")
    lines.append(f"protocol: {res['protocol']}")
    return "\n".join(lines)


def plot_profile(prof, path, positions=None, title=""):
    """Curves for chosen images (positions in the evaluated set; default: most, median and least probable
    at the smallest t, and two in between) and the dataset mean."""
    from . import plots

    n, d = len(prof["indices"]), prof["d"]
    log_p = None if prof["energy"] is None else units.log_p_db_per_dim(prof["energy"].numpy(), d)
    if positions is None:
        key = log_p[:, 0] if log_p is not None else -prof["d_eff"][:, 0].numpy()
        order = (-key).argsort()
        positions = sorted({int(order[round(q * (n - 1))]) for q in (0, 0.25, 0.5, 0.75, 1.0)}, key=lambda p: -key[p])
    bad = [p for p in positions if not 0 <= p < n]
    if bad:
        raise ValueError(f"--images {bad[0]}: expected positions 0..{n - 1} of the evaluated images")
    labels = [f"image {int(prof['indices'][p])}" + (f" (log p {log_p[p, 0]:.1f} dB/dim)" if log_p is not None else "")
              for p in positions]
    means = dataset_means(prof)
    return plots.dimension_curves(
        prof["t"].numpy(), prof["d_eff"][positions].numpy(), None if log_p is None else log_p[positions], labels, path,
        d=d, mean_d_eff=[m["d_eff"] for m in means],
        mean_log_p=None if log_p is None else [m["log_p_db_per_dim"] for m in means], title=title)
