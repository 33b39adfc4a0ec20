"""The order in which training examples are visited, as a pure function of the step.

The examples form one endless stream: epoch e is a permutation of the training rows
drawn from (seed, e) when shuffling, or the rows in order otherwise; batch i is
stream positions i·B … i·B+B-1, so a batch that crosses an epoch boundary takes the
last rows of one epoch and the first of the next, as TF1's `next_batch` does.
Because the permutation of an epoch depends only on the seed and the epoch number,
resuming at step i needs nothing but i: no RNG state has to be carried.
"""

from __future__ import annotations

import numpy as np

from .dataset import Split, decode

# Separates the data-order streams from the initialisation streams of the same seed.
_DATA_STREAM = 1


class BatchStream:
    def __init__(self, split: Split, batch_size: int, seed: int, shuffle: bool):
        """Batches of `split`. A `Split.coded` stays codes: each batch's codes are gathered,
        then decoded into features of the split's dtype."""
        self.split = split
        x, y = split.stored, split.y
        self.n = len(split)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self._perms: dict[int, np.ndarray] = {}
        # Gather targets: batches are copied into these, never re-allocated.
        self._codes = np.empty((batch_size,) + x.shape[1:], x.dtype) if split.scale is not None else None
        self._xbuf = np.empty((batch_size,) + x.shape[1:], split.dtype)
        self._ybuf = np.empty((batch_size,) + y.shape[1:], y.dtype)
        self._idx = np.empty(batch_size, np.intp)

    @property
    def steps_per_epoch(self) -> float:
        return self.n / self.batch_size

    def permutation(self, epoch: int) -> np.ndarray:
        perm = self._perms.get(epoch)
        if perm is None:
            if self.shuffle:
                perm = np.random.default_rng([self.seed, _DATA_STREAM, epoch]).permutation(self.n)
            else:
                perm = np.arange(self.n)
            # a batch spans at most a few epochs; keep only the ones still in use
            for old in [e for e in self._perms if e < epoch - 1]:
                del self._perms[old]
            self._perms[epoch] = perm
        return perm

    def indices(self, step: int) -> np.ndarray:
        """Row numbers of batch `step`."""
        start = step * self.batch_size
        filled = 0
        while filled < self.batch_size:
            epoch, offset = divmod(start + filled, self.n)
            take = min(self.batch_size - filled, self.n - offset)
            self._idx[filled : filled + take] = self.permutation(epoch)[offset : offset + take]
            filled += take
        return self._idx

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of batch `step`, in buffers reused by the next call."""
        idx = self.indices(step)
        # mode='clip' skips the bounds-check pass; idx is in range by construction. The
        # ndarray method skips np.take's Python wrapper: ~1 µs a step, 1% of a softmax step.
        split = self.split
        if self._codes is None:
            split.stored.take(idx, axis=0, out=self._xbuf, mode="clip")
        else:
            decode(split.stored.take(idx, axis=0, out=self._codes, mode="clip"), split.scale, self._xbuf)
        split.y.take(idx, axis=0, out=self._ybuf, mode="clip")
        return self._xbuf, self._ybuf

    def position(self, step: int) -> dict:
        """Where in the data stream a run that has done `step` updates stands."""
        epoch, offset = divmod(step * self.batch_size, self.n)
        return {"epoch": int(epoch), "offset": int(offset)}
