"""The epoch plan of a mix of datasets: a pure function of (seed, epoch) and the counts.

The sources' shards are concatenated, so a *global sample index* is a position in that
list (source 0's samples first), and everything after the epoch sequence is the plain
plan of :mod:`loffdata.stream.plan` (window shuffle into the global order, global batches,
rank and worker split, resume by position in the global order).

1. **Epoch composition** (:func:`epoch_counts`). Source ``i`` of ``N_i`` samples and
   proportion ``p_i`` (weights normalised; default ``N_i / sum N``) contributes
   ``n_i ~ p_i T`` samples (largest remainders, so ``sum n_i == T``), where ``T`` is
   ``"smallest"``: ``min N_i / p_i`` (the first source to run out ends the epoch: nothing
   repeats), ``"total"``: ``sum N_i``, or a fixed sample count.
2. **Source streams** (:func:`source_stream`). Each source is an endless stream of passes;
   pass ``r`` holds every sample once, in a shard order permuted by (seed, source, r).
   Epoch ``e`` takes the stream's items ``[e n_i, (e + 1) n_i)``: an undersampled source
   moves on through its data from epoch to epoch, an oversampled one repeats whole passes
   (every sample ``floor`` or ``ceil`` of ``n_i / N_i`` times).
3. **Interleaving** (:func:`interleave`). Item ``k`` of source ``i`` gets the key
   ``(k + u) / n_i`` with ``u`` uniform in [0, 1) from (seed, epoch, source) (``0.5``
   without shuffle); sorting the keys spreads every source evenly over the epoch while
   each keeps its own order (its shards are read one after another).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from loffdata.stream.plan import epoch_sequence

__all__ = [
    "EPOCH_POLICIES",
    "proportions",
    "epoch_counts",
    "source_stream",
    "interleave",
    "mix_sequence",
]

EPOCH_POLICIES = ("smallest", "total")
_PASS_KEY = 0x4D49
_MIX_KEY = 0x7E11


def _key(*parts: int) -> int:
    return int(
        np.random.SeedSequence([int(p) & 0xFFFFFFFFFFFFFFFF for p in parts]).generate_state(1)[0]
    )


def proportions(sizes: Sequence[int], weights: Sequence[float] | None) -> np.ndarray:
    """Proportions of the sources: normalised ``weights``, or by size when ``None``."""
    w = np.asarray(sizes if weights is None else weights, dtype=np.float64)
    if len(w) == 0 or np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError(f"weights must be finite, >= 0 and not all 0, got {list(w)}")
    return w / w.sum()


def epoch_counts(
    sizes: Sequence[int], weights: Sequence[float] | None, epoch_size: str | int
) -> np.ndarray:
    """Samples each source contributes per epoch (step 1 of the module docs)."""
    sizes_ = np.asarray(sizes, dtype=np.int64)
    p = proportions(sizes_, weights)
    if np.any((p > 0) & (sizes_ == 0)):  # it could deliver nothing of its share: len() would lie
        raise ValueError(f"a source with weight > 0 has no samples (sizes {sizes_.tolist()})")
    if isinstance(epoch_size, str):
        if epoch_size not in EPOCH_POLICIES:
            raise ValueError(
                f"epoch_size must be one of {EPOCH_POLICIES} or a sample count, got {epoch_size!r}"
            )
        used = p > 0
        total = (
            int(np.floor(np.min(sizes_[used] / p[used]) + 1e-9))
            if epoch_size == "smallest"
            else int(sizes_.sum())
        )
    else:
        total = int(epoch_size)
        if total < 1:
            raise ValueError(f"epoch_size must be >= 1, got {epoch_size}")
    exact = p * total
    n = np.floor(exact + 1e-9).astype(np.int64)
    order = np.argsort(-(exact - n), kind="stable")
    n[order[: total - int(n.sum())]] += 1
    if epoch_size == "smallest":
        n = np.minimum(n, sizes_)
    return n


def source_stream(
    counts: Sequence[int], n: int, *, seed: int, source: int, epoch: int, shuffle: bool
) -> np.ndarray:
    """Local sample indices of one source for one epoch (step 2 of the module docs)."""
    size = int(np.sum(counts))
    if n == 0 or size == 0:
        return np.empty(0, np.int64)
    lo, hi = epoch * n, (epoch + 1) * n
    parts = []
    for r in range(lo // size, (hi - 1) // size + 1):
        seq = epoch_sequence(counts, seed=_key(_PASS_KEY, seed, source), epoch=r, shuffle=shuffle)
        parts.append(seq[max(lo - r * size, 0) : hi - r * size])
    return np.concatenate(parts)


def interleave(seqs: Sequence[np.ndarray], *, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """One sequence of all ``seqs``, each spread evenly and kept in order (step 3)."""
    keys, items = [], []
    for i, seq in enumerate(seqs):
        n = len(seq)
        if not n:
            continue
        rng = np.random.default_rng(_key(_MIX_KEY, seed, epoch, i))
        u = rng.random(n) if shuffle else np.full(n, 0.5)
        keys.append((np.arange(n) + u) / n)
        items.append(seq)
    if not items:
        return np.empty(0, np.int64)
    order = np.argsort(np.concatenate(keys), kind="stable")
    return np.concatenate(items)[order].astype(np.int64)


def mix_sequence(
    source_counts: Sequence[Sequence[int]],
    n: Sequence[int],
    *,
    seed: int,
    epoch: int,
    shuffle: bool,
) -> np.ndarray:
    """Global sample indices of the mixed epoch (sources' shards concatenated)."""
    bases = np.concatenate([[0], np.cumsum([sum(c) for c in source_counts])]).astype(np.int64)
    seqs = [
        source_stream(c, int(k), seed=seed, source=i, epoch=epoch, shuffle=shuffle) + bases[i]
        for i, (c, k) in enumerate(zip(source_counts, n))
    ]
    return interleave(seqs, seed=seed, epoch=epoch, shuffle=shuffle)
