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
    ``sample_requests``)."""

    shard: ShardRead
    start: int
    end: int
    block: bool = False


def sample_ranges(
    counts: list[int],
    offsets: Sequence[np.ndarray] | Mapping[int, np.ndarray],
    indices: np.ndarray,
    group: int,
    *,
    block_size: int,
) -> Iterator[tuple[int, int, int]]:
    """``(shard, start, end)`` byte ranges covering the samples of ``indices``, in the order
    a reader that reads ``group`` of them at a time (each group in index order) needs them.

    Each sample's range runs :data:`TAIL_BYTES` past its end (clipped to the shard); samples
    of a group in one shard closer than ``GAP_BYTES`` share a range of at most
    ``block_size`` bytes. Lazy: a plan of any length costs nothing until it is read.
    """
    starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
    for lo in range(0, len(indices), max(1, group)):
        chunk = np.sort(np.asarray(indices[lo : lo + group], dtype=np.int64))
        sid = np.searchsorted(starts, chunk, side="right") - 1
        run: list[int] | None = None  # [shard, start, end]
        for s, loc in zip(sid.tolist(), (chunk - starts[sid]).tolist()):
            o = offsets[s]
            a, b = int(o[loc]), int(o[loc + 1]) + TAIL_BYTES  # clipped to the shard by the caller
            if (
                run is not None
                and run[0] == s
                and a - run[2] <= GAP_BYTES
                and max(b, run[2]) - run[1] <= block_size
            ):
                run[2] = max(run[2], b)
                continue
            if run is not None:
                yield tuple(run)
            run = [s, a, b]
        if run is not None:
            yield tuple(run)


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

    def _peek(self) -> RangeRead | None:
        if self._peeked is None:
            self._peeked = next(self._jobs, None)
        return self._peeked

    def _entry(self, read: ShardRead) -> _Entry:
        e = self._entries.get(read.url)
        if e is None:
            e = self._entries[read.url] = _Entry(read, Pin(read.url))
        return e

    def take(self, e: _Entry, start: int) -> tuple[int, bytes]:
        """``(block start, bytes)`` of a block that holds byte ``start`` (fetched now, up to
        :data:`~loffdata.storage.prefetch.by_shard.MISS_BYTES`, if none was planned)."""
        with self._lock:
            held = [s for s, (n, _) in e.blocks.items() if s <= start < s + n]
            if held:
                first = max(held)
            else:
                first, n = start, max(1, min(MISS_BYTES, e.read.size - start))
                self._served.setdefault(e.read.url, []).append((start, start + n))
                self._launch(e, start, n)
            n, fut = e.blocks.pop(first)
            self.held -= n
        self._pump()
        return first, block_result(fut)

    def close(self) -> None:
        with self._lock:
            self._jobs, self._peeked = iter(()), None
        super().close()


def planned_ranges(
    reads: Callable[[int], ShardRead | None], ranges: Iterable[tuple[int, int, int]]
) -> Iterator[RangeRead]:
    """:class:`RangeRead` of each ``(shard, start, end)`` whose shard ``reads`` can prefetch."""
    for s, a, b in ranges:
        read = reads(s)
        if read is not None:
            yield RangeRead(read, a, min(b, read.size))


def block_ranges(reads: Iterable[ShardRead], block_size: int) -> Iterator[RangeRead]:
    """The blocks of each shard's needed prefix (``read.end`` bytes), shard after shard."""
    for read in reads:
        for a in range(0, read.end, block_size):
            yield RangeRead(read, a, min(a + block_size, read.size), block=True)
