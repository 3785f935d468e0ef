"""An in-memory or memory-mapped array of examples, read as float tensors in batches.

uint8 arrays are 8-bit images: pixels are value/255 in [0, 1] and NLLs get the +8 bits/dim of the bin
width. float arrays are continuous data used as is (no +8).
"""
import math

import numpy as np
import torch

NUMPY_FLOAT = {torch.float32: np.float32, torch.float64: np.float64}


class ArrayData:
    subset_spec = None  # "first:N" etc. when this view is a training subset (set by subsets.subset)

    def __init__(self, array, name="array", fingerprint=None, labels=None, indices=None):
        self.array = array
        self.name = name
        self.fingerprint = fingerprint
        self.labels = labels
        # Optional view: positions into `array` (subsets); dataset indices stay those of the full array.
        self.indices = None if indices is None else np.asarray(indices, dtype=np.int64)

    @classmethod
    def wrap(cls, data, name="array"):
        if isinstance(data, ArrayData):
            return data
        if isinstance(data, torch.Tensor):
            data = data.numpy() if data.dtype == torch.uint8 else data.detach().cpu().float().numpy()
        return cls(np.asarray(data), name=name)

    def __len__(self):
        return len(self.array) if self.indices is None else len(self.indices)

    @property
    def shape(self):
        return tuple(self.array.shape[1:])

    @property
    def d(self):
        return math.prod(self.shape)

    @property
    def quantization_bits(self):
        return 8 if self.array.dtype == np.uint8 else None

    def index(self, positions):
        """Dataset indices (into the full array) of positions in this view."""
        positions = np.asarray(positions, dtype=np.int64)
        return positions if self.indices is None else self.indices[positions]

    def subset(self, positions, name=None):
        return ArrayData(self.array, name or self.name, self.fingerprint, self.labels, self.index(positions))

    def batch(self, positions, device=None, dtype=torch.float32, flip=None):
        """Examples at `positions` as a float tensor on `device` (uint8 -> value/255, converted there).

        flip: optional boolean mask over the positions; those images are mirrored left-right while still
        uint8 on the host (cheaper than on floats), as the paper's random horizontal flips.
        """
        idx = self.index(positions)
        order = np.argsort(idx, kind="stable")  # memmaps read fastest with sorted fancy indexing
        rows = np.empty((len(idx), *self.array.shape[1:]), dtype=self.array.dtype)
        rows[order] = self.array[idx[order]]
        if flip is not None:
            sel = np.flatnonzero(np.asarray(flip.cpu() if isinstance(flip, torch.Tensor) else flip, dtype=bool))
            rows[sel] = rows[sel, ..., ::-1]
        if rows.dtype == np.uint8 and dtype in NUMPY_FLOAT and (device is None or torch.device(device).type == "cpu"):
            # On the CPU convert with numpy: one thread, no OpenMP start-up or contention, same IEEE result.
            f = rows.astype(NUMPY_FLOAT[dtype])
            np.divide(f, 255, out=f)
            return torch.from_numpy(f)
        x = torch.from_numpy(rows).to(device)  # uint8 travels to the device (4x fewer bytes), converted there
        return x.to(dtype).div_(255) if x.dtype == torch.uint8 else x.to(dtype)

    def batches(self, batch_size, device=None, dtype=torch.float32, positions=None):
        """Yield (dataset_indices, float batch) in order over `positions` (default: all)."""
        positions = np.arange(len(self)) if positions is None else np.asarray(positions)
        for start in range(0, len(positions), batch_size):
            pos = positions[start:start + batch_size]
            yield self.index(pos), self.batch(pos, device, dtype)
