"""Read pickled dicts of numpy arrays (image-net.org and CIFAR batches) without running arbitrary code.

A plain pickle.load on a user's file can call any importable function. This unpickler resolves only
the few globals numpy needs to rebuild an ndarray; anything else is refused with a DataError.
"""
import pickle

import numpy as np

from .cache import DataError

_core = getattr(np, "_core", None) or np.core  # numpy >= 2 moved numpy.core to numpy._core


def _allowed():
    objects = {"_reconstruct": _core.multiarray._reconstruct, "scalar": _core.multiarray.scalar,
               "_frombuffer": _core.numeric._frombuffer}
    table = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): _latin1_encode}
    for package in ("numpy.core", "numpy._core"):
        table[(f"{package}.multiarray", "_reconstruct")] = objects["_reconstruct"]
        table[(f"{package}.multiarray", "scalar")] = objects["scalar"]
        table[(f"{package}.numeric", "_frombuffer")] = objects["_frombuffer"]
    return table


def _latin1_encode(text, encoding="utf-8"):
    """Python 3 protocol-2 pickles store bytes as _codecs.encode(str, 'latin1'); allow only that."""
    if encoding.lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise pickle.UnpicklingError(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


ALLOWED = _allowed()


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name} (only numpy arrays are allowed)") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refused persistent id")


def load_dict(path):
    """Unpickle a dict of arrays/lists/numbers from `path` (Python 2 pickles too); keys become str."""
    try:
        with open(path, "rb") as f:
            obj = _Unpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError, OverflowError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{path}: not a readable pickled batch ({msg})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: the pickle holds a {type(obj).__name__}; expected a dict with keys data and labels")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}
