"""The epoch plan: which sample each rank and worker yields, and in what order.

Everything here is a pure function of (seed, epoch), the layout (world size, workers,
batch size) and the per-shard sample counts. Nothing reads data. A *global sample index*
is a sample's position in manifest order (shard 0's samples first).

1. **Shard order.** The shards are permuted by (seed, epoch); concatenating their samples
   in that order gives the epoch sequence of ``N`` global indices (:func:`epoch_sequence`).
2. **Rank split.** Rank ``r`` takes the contiguous slice ``[r * L, (r + 1) * L)`` of the
   sequence. ``partial="pad"``: ``L = ceil(N / world)`` and the sequence is extended
   cyclically, so the last rank(s) repeat the first ``world * L - N`` samples of the epoch
   sequence. ``partial="drop"``: ``L = floor(N / world)``; the last ``N mod world`` samples
   of the epoch sequence are not used this epoch.
3. **Batches and workers.** A rank's ``L`` samples are cut into batches of ``batch_size``
   (the last one partial, or dropped with ``drop_last``). Worker ``w`` of ``W`` takes a
   contiguous group of whole batches (``numpy.array_split`` sizes, so workers with lower
   ids have at least as many batches). The rank's *delivery order* is that of
   ``torch.utils.data.DataLoader``: round robin over workers, one batch each, exhausted
   workers skipped (:func:`delivery_order`).
4. **Shuffle.** Inside each worker's contiguous range, windows of ``shuffle_buffer``
   samples (rounded up to whole batches, :func:`window_size`) are permuted by a generator
   keyed by (seed, epoch, position of the window in the padded epoch sequence): no two
   windows, workers or ranks share a random stream. A worker reads one window at a time.
5. **Resumption** (:func:`resume_plan`). A :class:`PlanState` records the layout and how
   many batches the rank has delivered. With the same world size and batch size, the
   remaining batches are dealt round robin to the (possibly different number of) workers,
   so the loader continues with exactly the rest of the uninterrupted sequence, in the same
   order. With a different world size or batch size, the set of samples delivered by all
   old ranks (assumed in lockstep: each delivered the same count, as under DDP) is
   removed, and the remaining samples of the epoch are planned afresh for the new layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "PlanConfig",
    "Layout",
    "PlanState",
    "WorkerPlan",
    "RankPlan",
    "shard_order",
    "epoch_sequence",
    "rank_length",
    "rank_positions",
    "worker_batch_counts",
    "delivery_order",
    "window_shuffle",
    "window_size",
    "rank_plan",
    "resume_plan",
    "sample_locations",
]

_PARTIAL = ("pad", "drop")
_SHARD_KEY = 0x5A4D
_WINDOW_KEY = 0x3C1F


@dataclass(frozen=True)
class PlanConfig:
    """What decides the order, independent of the layout.

    Attributes:
        seed: base seed.
        shuffle: permute shards and shuffle within windows; ``False`` keeps manifest order.
        shuffle_buffer: window size of the within-worker shuffle, in samples (rounded up
            to a multiple of the batch size).
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
        parent: the state this plan was itself resumed from with a different world or batch
            size (``None`` for a plan that covers the whole epoch).
    """

    epoch: int
    layout: Layout
    delivered: int = 0
    parent: PlanState | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "world_size": self.layout.world_size,
            "num_workers": self.layout.num_workers,
            "batch_size": self.layout.batch_size,
            "delivered": self.delivered,
            "parent": None if self.parent is None else self.parent.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PlanState:
        layout = Layout(int(d["world_size"]), int(d["num_workers"]), int(d["batch_size"]))
        parent = None if d.get("parent") is None else cls.from_dict(d["parent"])
        return cls(int(d["epoch"]), layout, int(d["delivered"]), parent)


@dataclass(frozen=True)
class WorkerPlan:
    """What one worker yields: global indices in order, cut into batches of ``batch_sizes``."""

    indices: np.ndarray
    batch_sizes: np.ndarray


@dataclass(frozen=True)
class RankPlan:
    """A rank's epoch: its batches (as global indices) and the loader's delivery order.

    Attributes:
        indices: the rank's global sample indices, worker after worker, each worker's part
            in its yield order.
        batch_starts: offset of each batch in ``indices`` (plus a final end offset).
        worker_batches: ``(first, stop)`` batch ids of each worker.
        order: batch ids in delivery order.
    """

    indices: np.ndarray
    batch_starts: np.ndarray
    worker_batches: list[tuple[int, int]]
    order: np.ndarray = field(repr=False)

    @property
    def num_batches(self) -> int:
        return len(self.batch_starts) - 1

    def batch(self, b: int) -> np.ndarray:
        """Global indices of batch ``b``."""
        return self.indices[self.batch_starts[b] : self.batch_starts[b + 1]]

    def delivered_indices(self, k: int) -> np.ndarray:
        """Global indices of the first ``k`` batches in delivery order."""
        return self._gather(self.order[:k])

    def deal(self, start: int, num_workers: int, worker: int) -> WorkerPlan:
        """The batches from delivery position ``start`` on, dealt round robin to ``worker``.

        A DataLoader with ``num_workers`` workers then delivers them in this plan's delivery
        order, whatever the number of workers the plan was made for.
        """
        batches = self.order[start:][worker::num_workers]
        return WorkerPlan(indices=self._gather(batches), batch_sizes=self._sizes(batches))

    def _sizes(self, batches: np.ndarray) -> np.ndarray:
        return (self.batch_starts[batches + 1] - self.batch_starts[batches]).astype(np.int64)

    def _gather(self, batches: np.ndarray) -> np.ndarray:
        """Global indices of ``batches``, concatenated (vectorised)."""
        sizes = self._sizes(batches)
        if not len(sizes):
            return np.empty(0, np.int64)
        offsets = np.repeat(self.batch_starts[batches] - (np.cumsum(sizes) - sizes), sizes)
        return self.indices[offsets + np.arange(int(sizes.sum()))]

    def worker(self, w: int) -> WorkerPlan:
        """Worker ``w``'s own contiguous batches (the plan of an uninterrupted epoch)."""
        first, stop = self.worker_batches[w]
        lo, hi = self.batch_starts[first], self.batch_starts[stop]
        sizes = np.diff(self.batch_starts[first : stop + 1])
        return WorkerPlan(indices=self.indices[lo:hi], batch_sizes=sizes.astype(np.int64))


def _rng(*key: int) -> np.random.Generator:
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence([int(k) & 0xFFFFFFFFFFFFFFFF for k in key]))
    )


def shard_order(num_shards: int, *, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The epoch's order of shard ids: a permutation from (seed, epoch), or identity."""
    if not shuffle:
        return np.arange(num_shards, dtype=np.int64)
    return _rng(_SHARD_KEY, seed, epoch).permutation(num_shards).astype(np.int64)


def epoch_sequence(counts: Any, *, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """Global sample indices of the epoch: the shards' samples in epoch shard order."""
    counts = np.asarray(counts, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)])
    order = shard_order(len(counts), seed=seed, epoch=epoch, shuffle=shuffle)
    parts = [np.arange(starts[s], starts[s + 1], dtype=np.int64) for s in order]
    return np.concatenate(parts) if parts else np.empty(0, np.int64)


def rank_length(n: int, world_size: int, partial: str = "pad") -> int:
    """Samples every rank gets from a sequence of ``n``: ceil (pad) or floor (drop)."""
    if n == 0:
        return 0
    return -(-n // world_size) if partial == "pad" else n // world_size


def rank_positions(n: int, *, world_size: int, rank: int, partial: str = "pad") -> np.ndarray:
    """Positions in the epoch sequence that ``rank`` takes (cyclic past ``n`` when padding)."""
    length = rank_length(n, world_size, partial)
    return np.arange(rank * length, (rank + 1) * length, dtype=np.int64) % max(n, 1)


def worker_batch_counts(num_batches: int, num_workers: int) -> np.ndarray:
    """Batches per worker: contiguous groups, sizes as ``numpy.array_split``."""
    base, extra = divmod(num_batches, num_workers)
    return np.array([base + (w < extra) for w in range(num_workers)], dtype=np.int64)


def delivery_order(counts: Any) -> np.ndarray:
    """Batch ids in DataLoader delivery order for workers holding ``counts`` contiguous batches.

    Worker ``w`` holds batches ``[sum(counts[:w]), sum(counts[:w+1]))``; the loader takes one
    batch from each worker in turn, skipping exhausted ones.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.sum() == 0:
        return np.empty(0, np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rounds = np.arange(counts.max())
    grid = starts[None, :] + rounds[:, None]
    valid = rounds[:, None] < counts[None, :]
    return grid[valid].astype(np.int64)


def window_size(shuffle_buffer: int, batch_size: int) -> int:
    """The shuffle window in samples: ``shuffle_buffer`` rounded up to whole batches."""
    return -(-shuffle_buffer // batch_size) * batch_size


def window_shuffle(length: int, *, seed: int, epoch: int, start: int, window: int) -> np.ndarray:
    """A permutation of ``range(length)`` shuffled within consecutive windows.

    The window beginning at offset ``o`` is permuted by a generator keyed by
    (seed, epoch, ``start + o``), where ``start`` is the range's position in the padded epoch
    sequence, so distinct ranges never share a random stream.
    """
    out = np.arange(length, dtype=np.int64)
    for o in range(0, length, window):
        chunk = out[o : o + window]
        out[o : o + window] = chunk[
            _rng(_WINDOW_KEY, seed, epoch, start + o).permutation(len(chunk))
        ]
    return out


def _batch_starts(length: int, batch_size: int, drop_last: bool) -> np.ndarray:
    usable = length // batch_size * batch_size if drop_last else length
    starts = np.arange(0, usable, batch_size, dtype=np.int64)
    return np.append(starts, usable).astype(np.int64)


def _plan_sequence(
    seq: np.ndarray, cfg: PlanConfig, layout: Layout, rank: int, epoch: int
) -> RankPlan:
    """Splits a sequence of global indices for ``rank`` (steps 2-4 of the module docs)."""
    length = rank_length(len(seq), layout.world_size, cfg.partial)
    mine = (
        seq[rank_positions(len(seq), world_size=layout.world_size, rank=rank, partial=cfg.partial)]
        if length
        else seq[:0]
    )
    starts = _batch_starts(length, layout.batch_size, cfg.drop_last)
    counts = worker_batch_counts(len(starts) - 1, layout.num_workers)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    worker_batches = [(int(bounds[w]), int(bounds[w + 1])) for w in range(layout.num_workers)]
    indices = mine[: starts[-1]].copy()
    if cfg.shuffle:
        window = window_size(cfg.shuffle_buffer, layout.batch_size)
        for first, stop in worker_batches:
            lo, hi = int(starts[first]), int(starts[stop])
            perm = window_shuffle(
                hi - lo, seed=cfg.seed, epoch=epoch, start=rank * length + lo, window=window
            )
            indices[lo:hi] = indices[lo:hi][perm]
    return RankPlan(
        indices=indices,
        batch_starts=starts,
        worker_batches=worker_batches,
        order=delivery_order(counts),
    )


def _sequence(counts: Any, cfg: PlanConfig, parent: PlanState | None, epoch: int) -> np.ndarray:
    """The sequence a plan splits: the whole epoch, or what a parent state left over."""
    seq = epoch_sequence(counts, seed=cfg.seed, epoch=epoch, shuffle=cfg.shuffle)
    if parent is None:
        return seq
    planned, delivered = _all_ranks_progress(counts, cfg, parent)
    keep = np.isin(seq, planned) & ~np.isin(seq, delivered)
    return seq[keep]


def _all_ranks_progress(
    counts: Any, cfg: PlanConfig, state: PlanState
) -> tuple[np.ndarray, np.ndarray]:
    """(planned, delivered) global indices over all ranks of ``state``'s plan, lockstep assumed."""
    planned, delivered = [], []
    for r in range(state.layout.world_size):
        plan = rank_plan(counts, cfg, state.layout, rank=r, epoch=state.epoch, parent=state.parent)
        planned.append(plan.indices)
        delivered.append(plan.delivered_indices(state.delivered))
    return np.concatenate(planned), np.concatenate(delivered)


def rank_plan(
    counts: Any,
    cfg: PlanConfig,
    layout: Layout,
    *,
    rank: int,
    epoch: int,
    parent: PlanState | None = None,
) -> RankPlan:
    """The plan of ``rank`` for ``epoch``: of the whole epoch, or of what ``parent`` left."""
    if not 0 <= rank < layout.world_size:
        raise ValueError(f"rank {rank} is outside world_size {layout.world_size}")
    return _plan_sequence(_sequence(counts, cfg, parent, epoch), cfg, layout, rank, epoch)


def resume_plan(
    counts: Any, cfg: PlanConfig, state: PlanState, layout: Layout, *, rank: int
) -> tuple[RankPlan, PlanState, int]:
    """Plans the rest of ``state``'s epoch for ``layout`` (number of workers free to change).

    Returns:
        ``(plan, base, start)``: deal ``plan``'s batches from delivery position ``start`` to
        the workers (:meth:`RankPlan.deal`); ``base`` is the state whose ``delivered`` count
        later progress adds to (its layout keeps the worker count the order was made for).
    """
    same = (
        state.layout.world_size == layout.world_size
        and state.layout.batch_size == layout.batch_size
    )
    if same:
        plan = rank_plan(
            counts, cfg, state.layout, rank=rank, epoch=state.epoch, parent=state.parent
        )
        if state.delivered > plan.num_batches:
            raise ValueError(
                f"state says {state.delivered} batches delivered, the epoch has {plan.num_batches}"
            )
        return plan, state, state.delivered
    base = PlanState(epoch=state.epoch, layout=layout, delivered=0, parent=state)
    plan = rank_plan(counts, cfg, layout, rank=rank, epoch=state.epoch, parent=state)
    return plan, base, 0


def sample_locations(counts: Any, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(shard id, index within the shard) of each global sample index."""
    starts = np.concatenate([[0], np.cumsum(np.asarray(counts, dtype=np.int64))])
    shard = np.searchsorted(starts, indices, side="right") - 1
    return shard.astype(np.int64), (indices - starts[shard]).astype(np.int64)
