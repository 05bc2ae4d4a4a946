"""Prefetch by sample: the byte ranges of the samples a reader needs next, many in flight.

With a shard index (``offsets`` in the manifest) a reader knows where every sample it will
read lies. :func:`sample_ranges` turns the plan (global indices, read a group at a time)
into byte ranges in read order, coalescing neighbours of a group into one request of at
most a block; :class:`RangePrefetcher` keeps ``PrefetchConfig.sample_requests`` of them in
flight within the byte budget, pulling them from the (lazy) plan as the budget frees. A
shard is read through a :class:`~loffdata.storage.prefetch.by_shard.PrefetchedFile`; a read nobody
planned (a sample that failed a check, say) is fetched at once, first in line.

What the bytes are is checked by the reader, exactly as for a local file: this module only
moves bytes, with the retries, resume-from-offset and object-version pin of
:class:`~loffdata.storage.prefetch.by_shard.Prefetcher`.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from loffdata.storage.pinned import Pin
from loffdata.storage.prefetch.by_shard import (
    MISS_BYTES,
    PrefetchConfig,
    Prefetcher,
    ShardRead,
    _Entry,
    block_result,
)
from loffdata.storage.retry import RetryConfig

__all__ = [
    "RangePrefetcher",
    "RangeRead",
    "block_ranges",
    "planned_ranges",
    "sample_ranges",
    "TAIL_BYTES",
]

#: bytes read past a sample's end: the reader checks that the next header starts another key
TAIL_BYTES = 512
#: neighbours closer than this are fetched in one request (the gap's bytes are cheaper than
#: another request's latency at any object-store rate)
GAP_BYTES = 64 << 10


@dataclass(frozen=True)
class RangeRead:
    """Bytes ``[start, end)`` of a shard, to fetch ahead (``block``: a block of a shard read
    in sequence, kept to ``PrefetchConfig.requests`` in flight; else samples' bytes, kept to
    ``sample_requests``). ``until``: bytes read by several groups of the plan are kept until
    the reader has read this many samples (:meth:`RangePrefetcher.release`); else they are
    released when taken."""

    shard: ShardRead
    start: int
    end: int
    block: bool = False
    until: int | None = None


def sample_ranges(
    counts: list[int],
    offsets: Sequence[np.ndarray] | Mapping[int, np.ndarray],
    indices: np.ndarray,
    group: int,
    *,
    block_size: int,
    horizon: int = 0,
) -> list[tuple[int, int, int, int | None]]:
    """``(shard, start, end, until)`` byte ranges covering the samples of ``indices`` (a
    reader's next samples, read ``group`` at a time, each group in index order), in the
    order the reader first needs them.

    Each sample's range runs :data:`TAIL_BYTES` past its end (clipped to the shard by the
    caller). Samples of one group in one shard closer than ``GAP_BYTES`` share a range of at
    most ``block_size`` bytes; so do neighbours (no gap: no other process's bytes) read in
    groups at most ``horizon`` apart. A reader of every W-th batch of a shuffled window holds
    about 1/W of the window's samples, so about half of its samples' neighbours are its own
    with two readers, and one request for two of them costs the client about half the CPU
    of two. ``until``: for a range read in several groups, the position in ``indices``
    after whose group it is no longer needed (the reader keeps it until then, so the bytes
    kept are at most those of ``horizon`` groups); ``None`` for a range read in one group.
    """
    idx = np.asarray(indices, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
    order = np.lexsort((np.arange(len(idx)), idx))  # by sample, then by position
    sid = np.searchsorted(starts, idx[order], side="right") - 1
    samples = zip(sid.tolist(), (idx[order] - starts[sid]).tolist(), order // max(1, group))
    runs = sorted(_runs(offsets, samples, block_size, horizon))  # by the group first needing
    last = len(idx)  # them, then in index order
    return [
        (s, a, b, None if g0 == g1 else min(last, (g1 + 1) * group)) for g0, s, a, b, g1 in runs
    ]


def _runs(
    offsets: Sequence[np.ndarray] | Mapping[int, np.ndarray],
    samples: Iterable[tuple[int, int, int]],
    block_size: int,
    horizon: int,
) -> list[list[int]]:
    """``[first group, shard, start, end, last group]`` of each run of neighbours among
    ``samples`` (``(shard, sample, group)`` in shard and sample order)."""
    runs: list[list[int]] = []
    near: list[list[int]] = []  # the runs of this shard that end close to this sample
    for s, loc, g in samples:
        o = offsets[s]
        a, b, g = int(o[loc]), int(o[loc + 1]) + TAIL_BYTES, int(g)
        near = [r for r in near if r[1] == s and a - r[3] <= GAP_BYTES]
        run = next(
            (
                r
                for r in reversed(near)
                if max(b, r[3]) - r[2] <= block_size
                and max(g, r[4]) - min(g, r[0]) <= horizon
                and (a <= r[3] or r[0] == r[4] == g)  # across a gap: one group only
            ),
            None,
        )
        if run is None:
            run = [g, s, a, b, g]
            runs.append(run)
            near.append(run)
        run[0], run[3], run[4] = min(run[0], g), max(run[3], b), max(run[4], g)
    return runs


class RangePrefetcher(Prefetcher):
    """Keeps ranged GETs of planned byte ranges in flight for one reading process.

    Args:
        config: depth (``sample_requests``) and byte budget.
        retry: retries and timeouts of each request.
    """

    def __init__(self, config: PrefetchConfig, retry: RetryConfig):
        super().__init__(config, retry)
        self._jobs: Iterator[RangeRead] = iter(())
        self._peeked: RangeRead | None = None
        self._served: dict[str, list[tuple[int, int]]] = {}  # url -> ranges fetched on demand
        self._kept: list[tuple[int, str, int]] = []  # heap of (until, url, start)
        self._keep: set[tuple[str, int]] = set()  # blocks a take leaves in place

    def _depth(self, job: RangeRead) -> int:
        return self.config.requests if job.block else self.config.sample_requests

    def plan_ranges(self, ranges: Iterable[RangeRead]) -> None:
        """Sets the byte ranges to fetch next, in read order (replaces the previous plan)."""
        with self._lock:
            self._jobs, self._peeked, self._served = iter(ranges), None, {}
        self._pump()

    def extend_ranges(self, ranges: Iterable[RangeRead]) -> None:
        """Appends byte ranges to fetch after those planned already."""
        with self._lock:
            self._jobs = itertools.chain(self._jobs, ranges)
        self._pump()

    def _pump(self) -> None:
        if not self.config.requests:
            return  # prefetch off: each read fetches its own bytes
        with self._lock:
            while (job := self._peek()) is not None and self.in_flight < self._depth(job):
                n = job.end - job.start
                if self.held and self.held + n > self.config.budget_bytes:
                    break
                self._peeked = None
                e = self._entry(job.shard)
                covered = any(
                    a <= job.start and job.end <= b for a, b in self._served.get(job.shard.url, ())
                )
                if not covered and job.start not in e.blocks:
                    self._launch(e, job.start, n)
                    if job.until is not None:
                        heapq.heappush(self._kept, (job.until, job.shard.url, job.start))
                        self._keep.add((job.shard.url, job.start))

    def _peek(self) -> RangeRead | None:
        if self._peeked is None:
            self._peeked = next(self._jobs, None)
        return self._peeked

    def _entry(self, read: ShardRead) -> _Entry:
        e = self._entries.get(read.url)
        if e is None:
            e = self._entries[read.url] = _Entry(read, Pin(read.url))
        return e

    def take(self, e: _Entry, start: int) -> tuple[int, list[bytes]]:
        """``(block start, pieces)`` of a block that holds byte ``start`` (fetched now, up to
        :data:`~loffdata.storage.prefetch.by_shard.MISS_BYTES`, if none was planned)."""
        with self._lock:
            held = [s for s, (n, _) in e.blocks.items() if s <= start < s + n]
            if held:
                first = max(held)
            else:
                first, n = start, max(1, min(MISS_BYTES, e.read.size - start))
                self._served.setdefault(e.read.url, []).append((start, start + n))
                self._launch(e, start, n)
            if (e.read.url, first) in self._keep:  # read again by a later group
                fut = e.blocks[first][1]
            else:
                n, fut = e.blocks.pop(first)
                self.held -= n
        self._pump()
        return first, block_result(fut)

    def release(self, done: int) -> None:
        """The reader has read ``done`` samples of the plan: blocks kept for later groups
        that are past are dropped."""
        with self._lock:
            while self._kept and self._kept[0][0] <= done:
                _, url, start = heapq.heappop(self._kept)
                self._keep.discard((url, start))
                e = self._entries.get(url)
                if e is not None and start in e.blocks:
                    self._release(e, start)
        self._pump()

    def close(self) -> None:
        with self._lock:
            self._jobs, self._peeked, self._kept, self._keep = iter(()), None, [], set()
        super().close()


def planned_ranges(
    reads: Callable[[int], ShardRead | None],
    ranges: Iterable[tuple[int, int, int, int | None]],
    offset: int = 0,
) -> Iterator[RangeRead]:
    """:class:`RangeRead` of each ``(shard, start, end, until)`` whose shard ``reads`` can
    prefetch (``until`` counted from ``offset``)."""
    for s, a, b, until in ranges:
        read = reads(s)
        if read is not None:
            yield RangeRead(
                read, a, min(b, read.size), until=None if until is None else offset + until
            )


def block_ranges(reads: Iterable[ShardRead], block_size: int) -> Iterator[RangeRead]:
    """The blocks of each shard's needed prefix (``read.end`` bytes), shard after shard."""
    for read in reads:
        for a in range(0, read.end, block_size):
            yield RangeRead(read, a, min(a + block_size, read.size), block=True)
