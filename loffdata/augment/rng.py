"""Counter-based random numbers: a pure function of integer keys, vectorised in numpy.

Every random number used by the augmentation sampler is ``splitmix64`` applied to a
chain of keys (seed, epoch, sample index, view, slot, sub-index). There is no
generator state: the same keys give the same numbers in any process, any batch
composition and after any resume, and drawing for a batch is a handful of numpy
operations on uint64 arrays (no Python loop over samples).
"""

from __future__ import annotations

import numpy as np

__all__ = ["splitmix64", "mix", "sample_keys", "uniform", "normal", "batch_key"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser applied elementwise (uint64 in, uint64 out)."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, dtype=np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def mix(key: np.ndarray, value: np.ndarray | int) -> np.ndarray:
    """Fold one more integer (array or scalar, broadcast) into a key."""
    v = np.asarray(value).astype(np.int64).astype(np.uint64)
    return splitmix64(np.asarray(key, dtype=np.uint64) ^ splitmix64(v))


def sample_keys(seed: int, epoch: int, indices: np.ndarray, views: np.ndarray) -> np.ndarray:
    """Per-row keys for (seed, epoch, global sample index, view)."""
    base = mix(mix(np.uint64(0x10FFDA7A), seed), epoch)
    return mix(mix(base, indices), views)


def uniform(keys: np.ndarray, slot: int, extra: int | None = None) -> np.ndarray:
    """Uniform [0, 1) float64 per key for ``slot``; ``extra`` adds a trailing axis that long."""
    k = mix(keys, slot)
    if extra is not None:
        k = mix(k[..., None], np.arange(extra))
    return (k >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def normal(keys: np.ndarray, slot: int, extra: int | None = None) -> np.ndarray:
    """Standard normal float64 per key for ``slot`` (Box-Muller on two derived slots)."""
    u1 = 1.0 - uniform(keys, 2 * slot + 1_000_001, extra)  # (0, 1]: log is finite
    u2 = uniform(keys, 2 * slot + 1_000_002, extra)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def batch_key(seed: int, epoch: int, indices: np.ndarray) -> int:
    """One 63-bit key for an ordered batch of sample indices (order matters)."""
    idx = np.asarray(indices, dtype=np.int64).ravel()
    per = mix(mix(mix(np.uint64(0xBA7C4), seed), epoch), idx)
    pos = splitmix64(per ^ splitmix64(np.arange(idx.size, dtype=np.uint64)))
    with np.errstate(over="ignore"):
        total = np.bitwise_xor.reduce(pos) if idx.size else np.uint64(0)
    return int(splitmix64(np.uint64(total) ^ np.uint64(idx.size)) >> np.uint64(1))
