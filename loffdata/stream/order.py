"""The epoch's global order as a function of position, computed a window at a time.

The order ``G`` (step 1 of :mod:`loffdata.stream.plan`) is the shards permuted by
(seed, epoch), their samples concatenated (the *sequence*), then each window of
``shuffle_buffer`` positions permuted by a generator keyed by (seed, epoch, window start).
:class:`EpochOrder` holds only what is O(shards) (the shard order and where each shard
starts in the sequence) and computes ``G[p]`` for the positions asked: the permutation of
each window touched (the last few kept), a binary search for the shard. It never builds an
array of every sample; ``np.asarray(order)`` does (tests, small mixes).

:class:`BatchIndices` is a worker's (or a rank's) list of global indices, batch after batch,
as a lazy sequence: slicing it computes just that slice.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

__all__ = ["EpochOrder", "BatchIndices", "take", "rng", "shard_order"]

_SHARD_KEY = 0x5A4D
_WINDOW_KEY = 0x3C1F
#: Window permutations an order keeps (a worker reads a window or two at a time).
_KEPT = 4


def rng(*key: int) -> np.random.Generator:
    """The generator of ``key`` (each part taken modulo 2**64)."""
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence([int(k) & 0xFFFFFFFFFFFFFFFF for k in key]))
    )


def shard_order(num_shards: int, *, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The epoch's order of shard ids: a permutation from (seed, epoch), or identity."""
    if not shuffle:
        return np.arange(num_shards, dtype=np.int64)
    return rng(_SHARD_KEY, seed, epoch).permutation(num_shards).astype(np.int64)


def window_permutation(length: int, *, seed: int, epoch: int, start: int) -> np.ndarray:
    """The permutation of the window of ``length`` positions beginning at ``start``."""
    return rng(_WINDOW_KEY, seed, epoch, start).permutation(length)


class EpochOrder:
    """``G`` of one epoch, computed for the positions asked (see the module docs).

    Args:
        counts: samples per shard, in manifest order.
        seed, epoch: what the order is drawn from.
        shuffle: ``False``: manifest order.
        window: the shuffle window, in samples (``shuffle_buffer``).
    """

    def __init__(self, counts: Any, *, seed: int, epoch: int, shuffle: bool, window: int):
        counts = np.asarray(counts, dtype=np.int64)
        shards = shard_order(len(counts), seed=seed, epoch=epoch, shuffle=shuffle)
        firsts = np.concatenate([[0], np.cumsum(counts)])[:-1].astype(np.int64)
        self.n = int(counts.sum())
        self.seed, self.epoch, self.shuffle, self.window = seed, epoch, shuffle, int(window)
        #: where each shard (in epoch order) starts in the sequence, plus the end
        self._starts = np.concatenate([[0], np.cumsum(counts[shards])]).astype(np.int64)
        #: the global index of the first sample of each shard (in epoch order)
        self._firsts = firsts[shards]
        self._perms: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return self.n

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.at(np.arange(self.n, dtype=np.int64))
        return out if dtype is None else out.astype(dtype)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_perms": OrderedDict()}

    def sequence(self, q: np.ndarray) -> np.ndarray:
        """Global indices at positions ``q`` of the sequence (shards in epoch order)."""
        k = np.searchsorted(self._starts, q, side="right") - 1
        return self._firsts[k] + (q - self._starts[k])

    def at(self, positions: Any) -> np.ndarray:
        """``G[positions]`` (each in ``[0, n)``), as int64."""
        p = np.asarray(positions, dtype=np.int64)
        if not self.shuffle or not p.size:
            return self.sequence(p)
        wins = p // self.window
        touched, which = np.unique(wins, return_inverse=True)
        perms = [self._perm(int(w)) for w in touched.tolist()]
        bases = np.concatenate([[0], np.cumsum([len(x) for x in perms])])[:-1].astype(np.int64)
        begin = wins * self.window
        q = begin + np.concatenate(perms)[bases[which.ravel()] + (p.ravel() - begin.ravel())]
        return self.sequence(q.reshape(p.shape))

    def _perm(self, w: int) -> np.ndarray:
        got = self._perms.get(w)
        if got is None:
            start = w * self.window
            got = window_permutation(
                min(self.window, self.n - start), seed=self.seed, epoch=self.epoch, start=start
            )
            self._perms[w] = got
            while len(self._perms) > _KEPT:
                self._perms.popitem(last=False)
        return got


def take(order: EpochOrder | np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``order[positions]`` for a lazy order or an array (a mix's order)."""
    if isinstance(order, EpochOrder):
        return order.at(positions)
    return np.asarray(order)[positions].astype(np.int64)


class BatchIndices:
    """The global indices of some batches, batch after batch, computed a slice at a time.

    Batch ``j`` covers positions ``first[j], first[j] + 1, ...`` (``sizes[j]`` of them,
    modulo ``len(order)``: padding repeats the order from its start) of ``order``.
    """

    def __init__(
        self, order: EpochOrder | np.ndarray, first: np.ndarray, sizes: np.ndarray, skip: int = 0
    ):
        self.order, self.first, self.sizes = order, first, sizes
        self._ends = np.cumsum(sizes, dtype=np.int64)
        self._skip = int(skip)

    def __len__(self) -> int:
        return int(self._ends[-1]) - self._skip if len(self._ends) else 0

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[0 : len(self)]
        return out if dtype is None else out.astype(dtype)

    def tolist(self) -> list[int]:
        return np.asarray(self).tolist()

    def __getitem__(self, item: Any) -> Any:
        if isinstance(item, slice) and item.step in (None, 1):
            lo, hi, _ = item.indices(len(self))
            if item.stop is None and hi > lo:  # an open tail stays lazy (resuming a worker)
                return BatchIndices(self.order, self.first, self.sizes, self._skip + lo)
            return self._range(self._skip + lo, self._skip + max(hi, lo))
        if isinstance(item, (int, np.integer)):
            k = int(item) + (len(self) if item < 0 else 0)
            if not 0 <= k < len(self):
                raise IndexError(f"index {item} is out of range for {len(self)} indices")
            return int(self._range(self._skip + k, self._skip + k + 1)[0])
        return np.asarray(self)[item]

    def _range(self, a: int, b: int) -> np.ndarray:
        """Indices at offsets ``[a, b)`` of the whole list (``skip`` included)."""
        if b <= a:
            return np.empty(0, dtype=np.int64)
        j0 = int(np.searchsorted(self._ends, a, side="right"))
        j1 = int(np.searchsorted(self._ends, b, side="left")) + 1
        sizes = self.sizes[j0:j1]
        ends = self._ends[j0:j1]
        pos = np.repeat(self.first[j0:j1] - (ends - sizes), sizes) + np.arange(
            int(ends[0] - sizes[0]), int(ends[-1]), dtype=np.int64
        )
        pos = pos[a - int(ends[0] - sizes[0]) : b - int(ends[0] - sizes[0])]
        n = len(self.order)
        return take(self.order, pos % n if n else pos)
