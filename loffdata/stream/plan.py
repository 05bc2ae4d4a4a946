"""The epoch plan: one global sample order, split late across ranks and workers.

Everything here is a pure function of (seed, epoch) and the per-shard sample counts; the
layout (world size, workers, batch size) only decides who delivers which part. Nothing
reads data. A *global sample index* is a sample's position in manifest order (shard 0's
samples first).

1. **Global order** (:func:`global_order`). The shards are permuted by (seed, epoch);
   their samples concatenated in that order (:func:`epoch_sequence`), then shuffled within
   consecutive windows of ``shuffle_buffer`` samples, each window by a generator keyed by
   (seed, epoch, window position). This sequence ``G`` of ``N`` global indices is the
   epoch's order, whatever the layout. Without shuffle it is manifest order. Plans compute
   it lazily (:class:`~loffdata.stream.order.EpochOrder`): a window's permutation when a
   batch in it is asked for, never an array of every sample.
2. **Global batches.** With ``world`` ranks of ``batch_size`` samples, a *global batch*
   is ``B = world * batch_size`` consecutive positions of ``G``; global batch ``t`` holds
   the same samples for any world size at the same ``B``. The epoch covers positions
   ``[0, P)``: ``partial="pad"``: ``P = world * ceil(N / world)``, positions past ``N``
   repeat ``G`` from its start (cyclically); ``partial="drop"``: ``P = world *
   floor(N / world)``. The last global batch holds ``P mod B`` positions (a multiple of
   ``world``) or is dropped with ``drop_last``.
3. **Rank split.** Rank ``r`` takes the ``r``-th of ``world`` equal contiguous parts of
   every global batch: its batch ``t`` is its part of global batch ``t``, so every rank has
   the same number of batches, and concatenating the ranks' batch ``t`` gives global
   batch ``t``.
4. **Workers.** Worker ``w`` of ``W`` yields the rank's batches ``w, w + W, w + 2W, ...``
   (:meth:`RankPlan.worker`); torch's DataLoader delivers round robin, one batch per
   worker in turn, so the delivery order *is* the rank's batch order, for any ``W``.
5. **Resumption** (:func:`resume_plan`). A :class:`PlanState` records where in ``G`` the
   plan started and how many batches the rank has delivered, so the position reached in
   ``G`` is ``start + delivered * B`` (ranks in lockstep, as under DDP). A resumed plan
   covers ``G`` from that position on, for any layout: the rest of the same order (cut
   into the new layout's global batches; with the same global batch size, the same
   global batches).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from loffdata.stream.order import BatchIndices, EpochOrder, shard_order, window_permutation

__all__ = [
    "PlanConfig",
    "Layout",
    "PlanState",
    "WorkerPlan",
    "RankPlan",
    "shard_order",
    "epoch_sequence",
    "global_order",
    "epoch_end",
    "rank_length",
    "window_shuffle",
    "window_size",
    "rank_plan",
    "sequence_plan",
    "resume_plan",
    "resume_sequence_plan",
    "sample_locations",
    "epoch_order",
]

_PARTIAL = ("pad", "drop")


@dataclass(frozen=True)
class PlanConfig:
    """What decides the order, independent of the layout.

    Attributes:
        seed: base seed.
        shuffle: permute shards and shuffle within windows; ``False`` keeps manifest order.
        shuffle_buffer: window size of the shuffle of the global order, in samples (the
            same for any layout; a worker reads it rounded up to whole batches).
        partial: ``"pad"`` (every rank gets ``ceil(N / world)`` samples, repeating the first
            samples of the epoch) or ``"drop"`` (``floor(N / world)``).
        drop_last: drop a rank's final partial batch.
    """

    seed: int = 0
    shuffle: bool = True
    shuffle_buffer: int = 1024
    partial: str = "pad"
    drop_last: bool = False

    def __post_init__(self) -> None:
        if self.partial not in _PARTIAL:
            raise ValueError(f"partial must be one of {_PARTIAL}, got {self.partial!r}")
        if self.shuffle_buffer < 1:
            raise ValueError(f"shuffle_buffer must be >= 1, got {self.shuffle_buffer}")


@dataclass(frozen=True)
class Layout:
    """How an epoch is split: ranks, DataLoader workers per rank, samples per batch."""

    world_size: int = 1
    num_workers: int = 1
    batch_size: int = 1

    def __post_init__(self) -> None:
        for name in ("world_size", "num_workers", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class PlanState:
    """A resumable position in an epoch (see :func:`resume_plan`).

    Attributes:
        epoch: the epoch.
        layout: the layout the ``delivered`` count refers to.
        delivered: batches (samples when ``batch_size == 1``) delivered on this rank, in
            delivery order.
        start: position in the epoch's global order where the plan began (``0`` for a
            plan that covers the whole epoch).
    """

    epoch: int
    layout: Layout
    delivered: int = 0
    start: int = 0

    @property
    def position(self) -> int:
        """Position reached in the global order: ``start + delivered * world * batch``."""
        return self.start + self.delivered * self.layout.world_size * self.layout.batch_size

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "world_size": self.layout.world_size,
            "num_workers": self.layout.num_workers,
            "batch_size": self.layout.batch_size,
            "delivered": self.delivered,
            "start": self.start,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PlanState:
        layout = Layout(int(d["world_size"]), int(d["num_workers"]), int(d["batch_size"]))
        return cls(int(d["epoch"]), layout, int(d["delivered"]), int(d.get("start", 0)))


@dataclass(frozen=True)
class WorkerPlan:
    """What one worker yields: global indices in order (an array, or a lazy
    :class:`~loffdata.stream.order.BatchIndices`: slices are computed when asked), cut into
    batches of ``batch_sizes``."""

    indices: np.ndarray | BatchIndices
    batch_sizes: np.ndarray


@dataclass(frozen=True)
class RankPlan:
    """A rank's epoch: its batches (as global indices), in delivery order.

    Batch ``b`` is positions ``first[b], first[b] + 1, ...`` (``batch_starts[b + 1] -
    batch_starts[b]`` of them, modulo ``len(order)``) of the global order ``order``: the
    plan holds O(batches) numbers, and indices are computed when asked for.

    Attributes:
        order: the epoch's global order (lazy, or an array).
        first: each batch's first position in ``order``.
        batch_starts: offset of each batch in :attr:`indices` (plus a final end offset).
    """

    order: EpochOrder | np.ndarray
    first: np.ndarray
    batch_starts: np.ndarray

    @property
    def num_batches(self) -> int:
        return len(self.batch_starts) - 1

    @property
    def indices(self) -> np.ndarray:
        """The rank's global sample indices, batch after batch (materialised)."""
        return np.asarray(self._lazy(np.arange(self.num_batches)))

    def batch(self, b: int) -> np.ndarray:
        """Global indices of batch ``b``."""
        return np.asarray(self._lazy(np.arange(b, b + 1)))

    def delivered_indices(self, k: int) -> np.ndarray:
        """Global indices of the first ``k`` batches."""
        return np.asarray(self._lazy(np.arange(min(k, self.num_batches))))

    def deal(self, start: int, num_workers: int, worker: int) -> WorkerPlan:
        """The batches from ``start`` on, dealt round robin: ``worker`` gets batches
        ``start + worker``, ``start + worker + num_workers``, ... A DataLoader with
        ``num_workers`` workers then delivers them in batch order."""
        batches = np.arange(start, self.num_batches, dtype=np.int64)[worker::num_workers]
        return WorkerPlan(indices=self._lazy(batches), batch_sizes=self._sizes(batches))

    def worker(self, w: int, num_workers: int) -> WorkerPlan:
        """Worker ``w``'s batches of the whole plan (``w, w + num_workers, ...``)."""
        return self.deal(0, num_workers, w)

    def _sizes(self, batches: np.ndarray) -> np.ndarray:
        return (self.batch_starts[batches + 1] - self.batch_starts[batches]).astype(np.int64)

    def _lazy(self, batches: np.ndarray) -> BatchIndices:
        return BatchIndices(self.order, self.first[batches], self._sizes(batches))


def epoch_sequence(counts: Any, *, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """Global sample indices of the epoch: the shards' samples in epoch shard order."""
    counts = np.asarray(counts, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)])
    order = shard_order(len(counts), seed=seed, epoch=epoch, shuffle=shuffle)
    parts = [np.arange(starts[s], starts[s + 1], dtype=np.int64) for s in order]
    return np.concatenate(parts) if parts else np.empty(0, np.int64)


def global_order(seq: np.ndarray, cfg: PlanConfig, epoch: int) -> np.ndarray:
    """The epoch's order ``G``: ``seq`` shuffled within windows of ``shuffle_buffer`` samples
    (step 1 of the module docs), or ``seq`` itself without shuffle."""
    if not cfg.shuffle:
        return seq
    perm = window_shuffle(len(seq), seed=cfg.seed, epoch=epoch, start=0, window=cfg.shuffle_buffer)
    return seq[perm]


def rank_length(n: int, world_size: int, partial: str = "pad") -> int:
    """Samples every rank gets from a sequence of ``n``: ceil (pad) or floor (drop)."""
    if n == 0:
        return 0
    return -(-n // world_size) if partial == "pad" else n // world_size


def epoch_end(n: int, start: int, world_size: int, partial: str = "pad") -> int:
    """End ``P`` of the positions a plan from ``start`` covers in an order of ``n`` samples:
    ``start`` plus a multiple of ``world_size`` (padded past ``n``, or short of it)."""
    return start + world_size * rank_length(max(n - start, 0), world_size, partial)


def window_size(shuffle_buffer: int, batch_size: int) -> int:
    """A worker's read window in samples: ``shuffle_buffer`` rounded up to whole batches."""
    return -(-shuffle_buffer // batch_size) * batch_size


def window_shuffle(length: int, *, seed: int, epoch: int, start: int, window: int) -> np.ndarray:
    """A permutation of ``range(length)`` shuffled within consecutive windows.

    The window beginning at offset ``o`` is permuted by a generator keyed by
    (seed, epoch, ``start + o``), so distinct ranges never share a random stream.
    """
    out = np.arange(length, dtype=np.int64)
    for o in range(0, length, window):
        chunk = out[o : o + window]
        out[o : o + window] = chunk[
            window_permutation(len(chunk), seed=seed, epoch=epoch, start=start + o)
        ]
    return out


def epoch_order(counts: Any, cfg: PlanConfig, epoch: int) -> EpochOrder:
    """The epoch's order ``G`` as a lazy function of position (equal to
    ``global_order(epoch_sequence(...))``, computed a window at a time)."""
    return EpochOrder(
        counts, seed=cfg.seed, epoch=epoch, shuffle=cfg.shuffle, window=cfg.shuffle_buffer
    )


def _rank_batches(
    start: int, end: int, layout: Layout, rank: int, drop_last: bool
) -> tuple[np.ndarray, np.ndarray]:
    """``(first, batch_starts)`` of ``rank``: where its part of every global batch in
    ``[start, end)`` begins, and the offsets of its batches (steps 2-3 of the module docs)."""
    world, b = layout.world_size, layout.batch_size
    big = world * b
    firsts = np.arange(start, end, big, dtype=np.int64)
    sizes = np.minimum(big, end - firsts)
    if drop_last and len(sizes) and sizes[-1] < big:
        firsts, sizes = firsts[:-1], sizes[:-1]
    part = sizes // world
    offsets = np.concatenate([[0], np.cumsum(part)]).astype(np.int64)
    return firsts + rank * part, offsets


def sequence_plan(
    order: EpochOrder | np.ndarray,
    cfg: PlanConfig,
    layout: Layout,
    *,
    rank: int,
    start: int = 0,
) -> RankPlan:
    """The plan of ``rank`` over the global order ``order`` from position ``start`` on."""
    if not 0 <= rank < layout.world_size:
        raise ValueError(f"rank {rank} is outside world_size {layout.world_size}")
    end = epoch_end(len(order), start, layout.world_size, cfg.partial)
    first, starts = _rank_batches(min(start, end), end, layout, rank, cfg.drop_last)
    return RankPlan(order=order, first=first, batch_starts=starts)


def rank_plan(
    counts: Any, cfg: PlanConfig, layout: Layout, *, rank: int, epoch: int, start: int = 0
) -> RankPlan:
    """The plan of ``rank`` for ``epoch``, from position ``start`` of the global order."""
    return sequence_plan(epoch_order(counts, cfg, epoch), cfg, layout, rank=rank, start=start)


def resume_plan(
    counts: Any, cfg: PlanConfig, state: PlanState, layout: Layout, *, rank: int
) -> tuple[RankPlan, PlanState]:
    """Plans the rest of ``state``'s epoch for ``layout`` (any world, workers, batch size).

    Returns:
        ``(plan, base)``: the plan of the global order from the position ``state`` reached,
        and the state later progress adds to (its ``start`` is that position).

    Raises:
        ValueError: if ``state`` says more batches were delivered than its plan has.
    """
    order = epoch_order(counts, cfg, state.epoch)
    return resume_sequence_plan(order, cfg, state, layout, rank=rank)


def resume_sequence_plan(
    order: EpochOrder | np.ndarray, cfg: PlanConfig, state: PlanState, layout: Layout, *, rank: int
) -> tuple[RankPlan, PlanState]:
    """:func:`resume_plan` over a given global order (of a mix, say)."""
    old = Layout(state.layout.world_size, 1, state.layout.batch_size)
    had = sequence_plan(order, cfg, old, rank=0, start=state.start).num_batches
    if state.delivered > had:
        raise ValueError(f"state says {state.delivered} batches delivered, the epoch has {had}")
    base = PlanState(epoch=state.epoch, layout=layout, delivered=0, start=state.position)
    return sequence_plan(order, cfg, layout, rank=rank, start=base.start), base


def sample_locations(counts: Any, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(shard id, index within the shard) of each global sample index."""
    starts = np.concatenate([[0], np.cumsum(np.asarray(counts, dtype=np.int64))])
    shard = np.searchsorted(starts, indices, side="right") - 1
    return shard.astype(np.int64), (indices - starts[shard]).astype(np.int64)
