"""bench/loader.py's helpers: shard a global batch by index, numpy flip masks, and a background prefetcher.

Not used by the trainer (which slices its global batch and draws its flips on the device, engine/trainer.py);
kept here, beside the benchmark that measures them, rather than in the package.

The trainer's data path is ArrayData.batch(positions, device, flip=mask): a sorted gather of uint8 rows
from the memory-mapped cache, flips on uint8, float conversion (numpy on the CPU, on the device
otherwise). Which positions and which flips are pure functions of (seed, step), so every process
takes its contiguous slice of the same global batch and the result does not depend on the number of
processes.
"""
import queue
import threading

import numpy as np


def shard(global_positions, rank, world):
    """This process's slice of a global batch: contiguous, equal sizes (the batch must divide evenly)."""
    n = len(global_positions)
    if n % world:
        raise ValueError(f"global batch {n} is not divisible by the number of processes ({world})")
    b = n // world
    return global_positions[rank * b:(rank + 1) * b]


def random_flips(seed, step, n):
    """A flip mask for one global batch, a pure function of (seed, step)."""
    return np.random.default_rng([seed, step, 0x5F1B]).random(n) < 0.5


class Prefetch:
    """Iterate `make(step)` for steps in `steps`, computed `depth` steps ahead in background threads.

    numpy releases the GIL while it copies and converts, so a worker overlaps with the training step.
    Results come back in step order.
    """

    def __init__(self, make, steps, depth=2, workers=1):
        self.make, self.steps = make, list(steps)
        self.out = queue.Queue()
        self.todo = queue.Queue()
        self.depth, self.results, self.next_submit = depth, {}, 0
        self.error = None
        self.threads = [threading.Thread(target=self._work, daemon=True) for _ in range(workers)]
        for t in self.threads:
            t.start()
        for _ in range(min(depth, len(self.steps))):
            self._submit()

    def _submit(self):
        if self.next_submit < len(self.steps):
            self.todo.put(self.next_submit)
            self.next_submit += 1

    def _work(self):
        while True:
            i = self.todo.get()
            if i is None:
                return
            try:
                self.out.put((i, self.make(self.steps[i]), None))
            except BaseException as e:  # hand the error to the consumer
                self.out.put((i, None, e))

    def __iter__(self):
        try:
            for i in range(len(self.steps)):
                while i not in self.results:
                    j, value, error = self.out.get()
                    if error is not None:
                        raise error
                    self.results[j] = value
                self._submit()
                yield self.results.pop(i)
        finally:
            self.close()

    def close(self):
        for _ in self.threads:
            self.todo.put(None)
