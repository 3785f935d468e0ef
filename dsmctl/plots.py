"""Every figure dsmctl draws, in one place (matplotlib with the Agg backend, imported lazily)."""
from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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
