"""dsmctl: learn normalized image densities with dual score matching.

The Python API (docs/api.md), imported on first use so that `import dsmctl` stays cheap:
    load(path, weights="auto", device="auto") -> Model    log_prob, bits_per_dim, energy, denoise, sample, meta
    open_data(source, split="test", n=None) -> Images      float tensors in the models' convention
"""
__version__ = "0.1.0"
__all__ = ["load", "open_data", "Model", "Images"]


def __getattr__(name):
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'dsmctl' has no attribute {name!r}")
