"""Data: sources -> prepared cache -> ArrayData views; see sources.py, writer.py and cache.py."""
import functools
import json
from pathlib import Path

from .arrays import ArrayData
from .cache import VERIFY_MODES, DataError, array_sha256, check_prepared, is_prepared, load_split, read_manifest, verify
from . import sources
from .writer import recover, write_prepared, write_splits


def prepare(source, out, force=False, progress=None, **options):
    """Stream a source into a prepared directory (resumable, atomic); returns the manifest.

    Re-running the same request is a no-op (the manifest comes back with "reused": True); a different
    request on an existing prepared directory needs force=True. Options: see sources.open_source.
    """
    readers, info, request = sources.open_source(source, **options)
    return write_splits(out, readers, info, request=request, force=force, progress=progress)


@functools.lru_cache(maxsize=4)
def _load_in_memory(source, synthetic_json):
    if sources.hf.is_hub_id(source):
        # A recipe's data.source like data/imagenet64 that was never prepared: say so, do not go to the Hub.
        raise DataError(f"{source}: no prepared dataset here; prepare it first (dsmctl prepare SOURCE --out {source}, "
                        f"see docs/data.md), or write hf:{source} to read the Hugging Face dataset {source} directly")
    spec = json.loads(synthetic_json) if synthetic_json else None
    return sources.load(source, synthetic_spec=spec)


def open_split(source, split, synthetic=None):
    """ArrayData for one split of a prepared directory (memory-mapped) or of a raw source (in memory)."""
    if is_prepared(source):
        return load_split(source, split)
    loaded = _load_in_memory(str(source), json.dumps(synthetic, sort_keys=True) if synthetic else "")
    if split not in loaded.splits:
        raise DataError(f"{source}: no split '{split}'; it has {', '.join(loaded.splits)}")
    array = loaded.splits[split]
    return ArrayData(array, name=f"{Path(str(source)).name}:{split}", fingerprint=array_sha256(array)[:16],
                     labels=loaded.labels.get(split))


def source_info(source, synthetic=None):
    """Provenance of a source (manifest of a prepared dir, or the info of a raw source)."""
    if is_prepared(source):
        return read_manifest(source)
    return _load_in_memory(str(source), json.dumps(synthetic, sort_keys=True) if synthetic else "").info


def true_density(source, synthetic=None):
    """The closed-form density behind synthetic data, else None."""
    from ..nn.densities import from_spec

    if str(source).startswith("synthetic"):
        spec = sources.synthetic_spec_of(str(source), synthetic)
    else:
        spec = source_info(source, synthetic).get("density")
    if not spec:
        return None
    return from_spec({k: v for k, v in spec.items() if k not in ("n_train", "n_test", "seed")})


from .subsets import check_disjoint, exclude_labels, partner, record_subset, subset, subset_positions, training_data_info  # noqa: E402
