"""An in-memory or memory-mapped array of examples, read as float tensors in batches.

uint8 arrays are 8-bit images: pixels are value/255 in [0, 1] and NLLs get the +8 bits/dim of the bin
width. float arrays are continuous data used as is (no +8).
"""
import math

import numpy as np
import torch


class ArrayData:
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

    def batch(self, positions, device=None, dtype=torch.float32):
        idx = self.index(positions)
        order = np.argsort(idx, kind="stable")  # memmaps read fastest with sorted fancy indexing
        rows = self.array[idx[order]][np.argsort(order)]
        x = torch.from_numpy(np.ascontiguousarray(rows)).to(device)
        return x.to(dtype) / 255 if x.dtype == torch.uint8 else x.to(dtype)

    def batches(self, batch_size, device=None, dtype=torch.float32, positions=None):
        """Yield (dataset_indices, float batch) in order over `positions` (default: all)."""
        positions = np.arange(len(self)) if positions is None else np.asarray(positions)
        for start in range(0, len(positions), batch_size):
            pos = positions[start:start + batch_size]
            yield self.index(pos), self.batch(pos, device, dtype)
