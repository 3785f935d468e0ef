"""Every figure dsmctl draws, in one place (matplotlib, Agg backend, imported only when a plot is asked for).

Each function takes plain arrays, writes one PNG atomically (temporary name, then rename) and returns its path.
"""
import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..fileio import atomic_path

DPI = 150


def _writable_dir(path):
    """Whether `path` is (or can be created as) a directory this user can write."""
    probe = Path(path)
    while not probe.exists():
        if probe.parent == probe:
            return False
        probe = probe.parent
    return probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)


def _matplotlib_dirs():
    """Give matplotlib a private configuration/cache directory, removed at exit, when its default ones cannot be
    written (a read-only HOME): it would otherwise warn on stderr and leave a temporary directory behind."""
    if "matplotlib" in sys.modules or os.environ.get("MPLCONFIGDIR"):
        return
    home = Path(os.path.expanduser("~"))
    config = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config") / "matplotlib"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or home / ".cache") / "matplotlib"
    if _writable_dir(config) and _writable_dir(cache):
        return
    tmp = tempfile.mkdtemp(prefix="dsmctl-matplotlib-")
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    os.environ["MPLCONFIGDIR"] = tmp


def _pyplot():
    _matplotlib_dirs()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def _as_display(img):
    """(C, H, W) in [0, 1] -> (H, W) or (H, W, 3) for imshow."""
    img = np.clip(np.asarray(img, dtype=np.float64), 0, 1)
    return img[0] if img.shape[0] == 1 else np.transpose(img[:3], (1, 2, 0))


def log_p_histogram(log_p_db, path, title="", bins=40):
    """Histogram of per-image log p (dB/dim), with mean and standard deviation marked."""
    plt = _pyplot()
    v = np.asarray(log_p_db, dtype=np.float64)
    v = v[np.isfinite(v)]
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.hist(v, bins=bins, color="#4c72b0", edgecolor="white", linewidth=0.5)
    ax.axvline(v.mean(), color="k", lw=1)
    ax.set_xlabel("log p(x)  [dB/dim]")
    ax.set_ylabel("images")
    ax.set_title(f"{title}\nmean {v.mean():.2f}, std {v.std():.2f}, range {v.min():.2f} … {v.max():.2f} dB/dim "
                 f"({len(v)} images)", fontsize=9)
    return _save(fig, path)


def image_strip(images, values, path, title="", n=12, label="dB/dim"):
    """Images ordered by decreasing `values` (e.g. log p), n of them evenly spaced in rank (paper Fig. 3)."""
    plt = _pyplot()
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(-values)
    pick = order[np.unique(np.linspace(0, len(order) - 1, min(n, len(order))).round().astype(int))]
    fig, axes = plt.subplots(1, len(pick), figsize=(1.1 * len(pick), 1.5), squeeze=False)
    for ax, i in zip(axes[0], pick):
        ax.imshow(_as_display(images[i]), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"{values[i]:.1f}", fontsize=7)
        ax.axis("off")
    fig.suptitle(f"{title}  (most → least probable; log p in {label})", fontsize=8, y=1.02)
    return _save(fig, path)


def denoising_curves(curves, path, title=""):
    """curves: {name: [{psnr_in, psnr_out, psnr_out_stderr}, ...]} -> output vs input PSNR (Table 1)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    lo, hi = np.inf, -np.inf
    for name, rows in curves.items():
        pin = np.array([r["psnr_in"] for r in rows])
        pout = np.array([r["psnr_out"] for r in rows])
        ax.errorbar(pin, pout, yerr=[r["psnr_out_stderr"] or 0 for r in rows], marker="o", ms=3, label=name)
        lo, hi = min(lo, pin.min(), pout.min()), max(hi, pin.max(), pout.max())
    ax.plot([lo, hi], [lo, hi], "k:", lw=0.8, label="identity")
    ax.set_xlabel("input PSNR [dB]")
    ax.set_ylabel("output PSNR [dB]")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)


def generalization_scatter(panels, path, title=""):
    """panels: [{"n": N, "a": log p of model A, "b": log p of model B, "kind": array of set names}] (Fig. 2)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.4), squeeze=False)
    colors = {"test": "#4c72b0", "subset A": "#dd8452", "subset B": "#55a868"}
    for ax, p in zip(axes[0], panels):
        a, b, kind = np.asarray(p["a"]), np.asarray(p["b"]), np.asarray(p["kind"])
        for name in ("subset A", "subset B", "test"):
            m = kind == name
            if m.any():
                ax.scatter(a[m], b[m], s=4, alpha=0.6, color=colors[name], label=name, rasterized=True)
        lo, hi = np.nanmin(np.concatenate([a, b])), np.nanmax(np.concatenate([a, b]))
        pad = 0.05 * (hi - lo) + 1e-3
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k:", lw=0.8)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_aspect("equal")
        ax.set_title(f"N = {p['n']:,}" + (f"\n{p['note']}" if p.get("note") else ""), fontsize=9)
        ax.set_xlabel("log p, model A [dB/dim]")
    axes[0][0].set_ylabel("log p, model B [dB/dim]")
    axes[0][-1].legend(fontsize=7, markerscale=3)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def dimension_curves(t, d_eff, log_p_db, labels, path, d=None, mean_d_eff=None, mean_log_p=None, title=""):
    """d_eff(x, t) and E_z log p_t against t for chosen images (rows of d_eff / log_p_db), plus the dataset mean."""
    plt = _pyplot()
    t = np.asarray(t)
    ncols = 2 if log_p_db is not None else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5 * ncols, 3.8), squeeze=False)
    ax = axes[0][0]
    for row, lab in zip(d_eff, labels):
        ax.plot(t, row, marker=".", ms=3, label=lab)
    if mean_d_eff is not None:
        ax.plot(t, mean_d_eff, "k--", lw=1.5, label="dataset mean")
    if d:
        ax.axhline(d, color="gray", lw=0.6, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("t (noise variance)")
    ax.set_ylabel("d_eff(x, t)")
    ax.legend(fontsize=7)
    if log_p_db is not None:
        ax = axes[0][1]
        for row, lab in zip(log_p_db, labels):
            ax.plot(t, row, marker=".", ms=3, label=lab)
        if mean_log_p is not None:
            ax.plot(t, mean_log_p, "k--", lw=1.5, label="dataset mean")
        ax.set_xscale("log")
        ax.set_xlabel("t (noise variance)")
        ax.set_ylabel("E_z log p_t(x + √t z)  [dB/dim]")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def generalization_summary(rows, path, title=""):
    """Per N: RMS and mean |Δ log p| on the test set, and each model's train − test gap."""
    plt = _pyplot()
    n = np.array([r["n"] for r in rows])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    ax = axes[0]
    ax.plot(n, [r["test"]["delta_rms"] for r in rows], "o-", label="RMS Δ log p (test)")
    ax.plot(n, [r["test"]["delta_abs_mean"] for r in rows], "s--", label="mean |Δ log p| (test)")
    ax.set_xscale("log")
    ax.set_xlabel("N (training images per model)")
    ax.set_ylabel("dB/dim")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(n, [r["gap_a"] for r in rows], "o-", label="model A: own train − test")
    ax.plot(n, [r["gap_b"] for r in rows], "s-", label="model B: own train − test")
    ax.axhline(rows[0]["memorization_threshold"], color="gray", ls=":", lw=1, label="memorization threshold")
    ax.set_xscale("log")
    ax.set_xlabel("N (training images per model)")
    ax.set_ylabel("log p gap [dB/dim]")
    ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def radial_slices(curves, radii, path, title):
    """curves: {label: log p values in dB/dim at `radii`}; writes a PNG."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
    for label, values in curves.items():
        ax.plot(radii, values, label=label, lw=2 if label.startswith("true") else 1.5,
                ls="-" if label.startswith("true") else "--")
    ax.set_xlabel(r"radius $\|y\| / \sqrt{d}$")
    ax.set_ylabel("log p (dB/dim)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def roc_curves(panels, path, title=""):
    """panels: {set name: {score name: (fpr, tpr, auroc)}}; one panel per outlier set."""
    plt = _pyplot()
    n = max(1, len(panels))
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.1 * rows), squeeze=False)
    for ax, (name, curves) in zip(axes.flat, panels.items()):
        for label, (fpr, tpr, auc) in curves.items():
            ax.plot(fpr, tpr, lw=1.3, label=f"{label} {auc:.3f}")
        ax.plot([0, 1], [0, 1], color="gray", ls=":", lw=0.8)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("false-positive rate", fontsize=8)
        ax.set_ylabel("true-positive rate", fontsize=8)
        ax.legend(fontsize=6, loc="lower right")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def score_histograms(values, path, title="", bins=50):
    """values: {set name: per-image scores}; overlaid histograms on a shared axis (the first set is the reference)."""
    plt = _pyplot()
    finite = {k: np.asarray(v, dtype=np.float64)[np.isfinite(v)] for k, v in values.items()}
    allv = np.concatenate([v for v in finite.values() if len(v)])
    edges = np.histogram_bin_edges(np.clip(allv, None, np.quantile(allv, 0.995)), bins=bins)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for i, (name, v) in enumerate(finite.items()):
        ax.hist(np.clip(v, None, edges[-1]), bins=edges, histtype="stepfilled" if i == 0 else "step",
                alpha=0.35 if i == 0 else 1.0, lw=1.2, label=f"{name} ({len(v)})", density=True)
    ax.set_xlabel("score (higher = more outlying; clipped at the 99.5 % quantile)", fontsize=8)
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
