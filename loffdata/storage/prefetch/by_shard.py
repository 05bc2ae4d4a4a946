"""Plan-driven prefetch: many ranged GETs in flight for the shards a reader will read next.

The epoch plan is a pure function of (seed, epoch), so a reading process knows, before it
reads anything, which shards it will read and in which order (:meth:`Prefetcher.plan`).
The prefetcher cuts those shards into blocks of ``retry.block_size`` bytes and keeps up to
``PrefetchConfig.requests`` of them in flight, in read order and across shard boundaries,
while the bytes fetched and not yet read (in flight included) stay within
``PrefetchConfig.budget_bytes``. A shard is read through a :class:`PrefetchedFile`, which
takes its blocks in turn (a block nobody fetched yet is fetched at once, first in line).

The requests run as coroutines on fsspec's IO loop (aiohttp for HTTP, aiobotocore for S3;
see :mod:`loffdata.storage.pinned`), each with the retries, backoff, deadline and
resume-from-offset of :mod:`loffdata.storage.shardfile`; a block's error is raised when the
reader takes that block, so a shard never read never fails the epoch. A completed request
starts the next one on the loop itself (:class:`~loffdata.storage.looptasks.LoopTasks`):
no thread hop per request.
"""

from __future__ import annotations

import bisect
import itertools
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from loffdata.storage.looptasks import LoopTasks
from loffdata.storage.pinned import Pin, fetch_range
from loffdata.storage.retry import RetryConfig, with_retries_async
from loffdata.storage.shardfile import RemoteFile

__all__ = [
    "PrefetchConfig",
    "Prefetcher",
    "PrefetchedFile",
    "ShardRead",
    "read_order",
    "bytes_needed",
]

#: bytes fetched at once for a read nobody planned, in sample mode (see ``RangePrefetcher``)
MISS_BYTES = 1 << 20


@dataclass(frozen=True)
class PrefetchConfig:
    """How far remote reads run ahead of the reader, per reading process (DataLoader worker).

    The defaults suit a cloud GPU node reading an object store (50-200 MB/s and 20-100 ms
    to first byte per request): 16 requests of 8 MiB (``RetryConfig.block_size``) in flight
    keep ~1-3 GB/s per worker busy; see docs/streaming.md for sizing.

    With ``by_sample`` (default), indexed shards (see ``docs/format.md``) read into batches
    are fetched *by sample*: only the byte ranges of the samples this process's batches
    need, neighbours coalesced (:mod:`loffdata.storage.prefetch.by_sample`), so the first batch
    waits for its own samples, not for a whole shuffle window, and each DataLoader worker
    (which reads every W-th batch of a window, see ``stream/plan.py``) fetches its own
    samples, not every shard of the window. Such requests are a sample or a run of
    neighbours, smaller than a block, so more of them are kept in flight
    (``sample_requests``); measured against nginx in docs/benchmarks.md.

    Attributes:
        requests: ranged GETs of whole-shard blocks in flight per process; ``0`` turns
            prefetch off (one sequential read with one block of read-ahead per shard, and
            one sample at a time by sample).
        budget_bytes: bytes fetched ahead and not yet read, in flight included (the
            memory prefetch may hold per process; with a cache, the bytes downloaded ahead).
        by_sample: fetch indexed shards by sample (default; the first batch after one
            round trip); ``False``: stream whole shards in blocks, fewer and larger
            requests (the first batch waits for its window; each worker streams them all).
        sample_requests: ranged GETs in flight per process when fetching by sample.
    """

    requests: int = 16
    budget_bytes: int = 256 << 20
    by_sample: bool = True
    sample_requests: int = 64

    def __post_init__(self) -> None:
        if self.requests < 0 or self.sample_requests < 1 or self.budget_bytes < 1:
            raise ValueError("requests must be >= 0, sample_requests >= 1 and budget_bytes >= 1")


@dataclass(frozen=True)
class ShardRead:
    """A shard the reader will read: its URL, filesystem and path, size, bytes needed."""

    url: str
    fs: Any
    path: str
    size: int
    end: int  # bytes from the start of the shard the reader is expected to need


def read_order(counts: list[int], indices: np.ndarray, window: int) -> list[tuple[int, int]]:
    """``(shard, samples needed from its start)`` in the order a reader that reads
    ``indices`` a window at a time (each window in index order) first opens the shards."""
    starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
    out: dict[int, int] = {}
    for lo in range(0, len(indices), max(1, window)):
        chunk = np.unique(indices[lo : lo + window])
        sid = np.searchsorted(starts, chunk, side="right") - 1
        last = np.flatnonzero(np.diff(sid, append=-1))  # last position of each shard's run
        for s, g in zip(sid[last].tolist(), chunk[last].tolist()):
            out[s] = max(out.get(s, 0), g - int(starts[s]) + 1)
    return list(out.items())


def bytes_needed(size: int, count: int, samples: int, block_size: int) -> int:
    """Bytes from a shard's start that cover its first ``samples`` of ``count`` (estimated
    from the mean sample size, one block of margin; the reader fetches any rest itself)."""
    if samples >= count:
        return size
    return min(size, -(-size * samples // max(1, count)) + block_size)


@dataclass(frozen=True)
class Failed:
    """The error of a block fetch, handed to the reader as a value (see ``Prefetcher._guarded``)."""

    error: Exception


def block_result(fut: Future) -> list[bytes]:
    """The bytes of a launched block fetch, in pieces; raises the error its fetch returned."""
    data = fut.result()
    if isinstance(data, Failed):
        raise data.error
    return data


@dataclass
class _Entry:
    read: ShardRead
    pin: Pin
    next: int = 0  # next byte to schedule
    blocks: dict[int, tuple[int, Future]] = field(default_factory=dict)  # start -> (bytes, future)


class Prefetcher:
    """Keeps ranged GETs in flight for the planned shards of one reading process.

    Args:
        config: depth and byte budget.
        retry: retries, timeouts and block size of each request.
    """

    def __init__(self, config: PrefetchConfig, retry: RetryConfig):
        self.config, self.retry = config, retry
        self._lock = threading.RLock()
        self._entries: dict[str, _Entry] = {}
        self._queue: list[_Entry] = []  # planned entries with bytes left to schedule, in read order
        self.held = 0  # bytes in flight or fetched and not yet taken
        self.in_flight = 0
        self.peak_in_flight = 0
        self.requests = 0
        self._tasks: dict[int, LoopTasks] = {}  # id(loop) -> its tasks (one loop in practice)

    def plan(self, reads: list[ShardRead]) -> None:
        """Sets the shards to read next, in read order (replaces the previous plan)."""
        with self._lock:
            self._queue = []
            for r in reads:
                e = self._entries.get(r.url)
                if e is None:
                    e = self._entries[r.url] = _Entry(r, Pin(r.url))
                if e.next < r.end:
                    e.read = ShardRead(r.url, r.fs, r.path, r.size, max(r.end, e.read.end))
                    self._queue.append(e)
        self._pump()

    def open(self, read: ShardRead) -> PrefetchedFile:
        """A file object over the shard's blocks (fetched ahead when planned)."""
        with self._lock:
            e = self._entries.get(read.url)
            if e is None:
                e = self._entries[read.url] = _Entry(read, Pin(read.url))
        return PrefetchedFile(self, e)

    # -- scheduling -----------------------------------------------------------------------

    def _pump(self) -> None:
        """Launches planned blocks while the depth and the budget allow."""
        bs = self.retry.block_size
        with self._lock:
            while self._queue and self.in_flight < self.config.requests:
                e = self._queue[0]
                if e.next >= e.read.end:
                    self._queue.pop(0)
                    continue
                n = min(bs, e.read.size - e.next)
                if self.held and self.held + n > self.config.budget_bytes:
                    break
                self._launch(e, e.next, n)

    def _launch(self, e: _Entry, start: int, n: int) -> Future:
        self.held += n
        self.in_flight += 1
        self.requests += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        e.next = max(e.next, start + n)
        fut = self.tasks(e).start(lambda: self._guarded(e, start, start + n), self._done)
        e.blocks[start] = (n, fut)
        return fut

    def tasks(self, e: _Entry) -> LoopTasks:
        """What starts the fetches of ``e``'s shard: tasks on its filesystem's IO loop."""
        loop = getattr(e.read.fs, "loop", None) or _io_loop()
        tasks = self._tasks.get(id(loop))
        if tasks is None or tasks.loop is not loop:
            tasks = self._tasks[id(loop)] = LoopTasks(loop)
        return tasks

    def _done(self) -> None:
        """A fetch ended (on the IO loop): its slot goes to the next planned block."""
        with self._lock:
            self.in_flight -= 1
        self._pump()

    async def _guarded(self, e: _Entry, start: int, end: int) -> list[bytes] | Failed:
        """:meth:`_fetch` that returns its error instead of raising it: a block released
        (its future cancelled) after its task failed would otherwise leave asyncio's "Task
        exception was never retrieved" (an ``ObjectChanged`` of a block no one reads)."""
        try:
            return await self._fetch(e, start, end)
        except Exception as err:
            return Failed(err)

    async def _fetch(self, e: _Entry, start: int, end: int) -> list[bytes]:
        """Bytes ``[start, end)`` as the pieces they arrived in (not joined: the reader
        copies them once, into their rows); a short answer (dropped connection) is completed
        from the offset reached."""
        r, parts, pos = e.read, [], start
        while pos < end:
            data = await with_retries_async(
                lambda p=pos: fetch_range(r.fs, r.path, p, end, e.pin, pieces=True),
                url=r.url,
                retry=self.retry,
            )
            if not data:  # the object ends here (shorter than its manifest entry): the
                break  # reader meets the end of the data and reports a truncated shard
            parts.extend(data)
            pos += sum(map(len, data))
        return parts

    # -- consumption ----------------------------------------------------------------------

    def take(self, e: _Entry, start: int) -> tuple[int, list[bytes]]:
        """``(start, pieces)`` of the block of ``e``'s shard from ``start`` (fetched now if
        not ahead)."""
        bs = self.retry.block_size
        with self._lock:
            for s in [s for s in e.blocks if s < start]:  # passed over (a seek): released
                self._release(e, s)
            got = e.blocks.pop(start, None)
            if got is None:
                stop = min(e.read.size, (start // bs + 1) * bs)
                self._launch(e, start, stop - start)
                got = e.blocks.pop(start)
            self.held -= got[0]
            if e.next < e.read.end and (not self._queue or self._queue[0] is not e):
                if e in self._queue:  # the shard being read goes first
                    self._queue.remove(e)
                self._queue.insert(0, e)
        self._pump()
        return start, block_result(got[1])

    def _release(self, e: _Entry, start: int) -> None:
        n, fut = e.blocks.pop(start)
        fut.cancel()
        self.held -= n

    def forget(self, url: str) -> None:
        """Drops what was fetched of ``url`` (its reader is done with it)."""
        with self._lock:
            e = self._entries.pop(url, None)
            if e is not None:
                for s in list(e.blocks):
                    self._release(e, s)
                if e in self._queue:
                    self._queue.remove(e)
        self._pump()

    def close(self) -> None:
        """Cancels everything in flight and drops every block."""
        with self._lock:
            self._queue = []
            for url in list(self._entries):
                self.forget(url)


def _io_loop() -> Any:
    from fsspec.asyn import get_loop

    return get_loop()


class PrefetchedFile(RemoteFile):
    """A read-only file over a :class:`Prefetcher`'s blocks of one shard."""

    def __init__(self, prefetcher: Prefetcher, entry: _Entry):
        super().__init__()
        self.prefetcher, self.entry, self.url = prefetcher, entry, entry.read.url
        self.size, self.offset = entry.read.size, 0
        self._start, self._end = 0, 0  # the block held: bytes [start, end) of the shard
        self._pieces: list[memoryview] = []
        self._starts: list[int] = []  # where each piece starts, from the block's start

    def _block(self) -> tuple[memoryview, int]:
        """The piece of the block holding the current offset, and the offset's position in
        it (empty at the end of the data)."""
        if not self._start <= self.offset < self._end:
            self._pieces = []
            self._start, data = self.prefetcher.take(self.entry, self.offset)
            self._pieces = [memoryview(d) for d in data] or [memoryview(b"")]
            self._starts = list(itertools.accumulate(map(len, self._pieces[:-1]), initial=0))
            self._end = self._start + self._starts[-1] + len(self._pieces[-1])
        rel = self.offset - self._start
        if len(self._pieces) == 1:
            return self._pieces[0], rel
        i = bisect.bisect_right(self._starts, rel) - 1
        return self._pieces[i], rel - self._starts[i]

    def readinto(self, b: Any) -> int:
        out = memoryview(b).cast("B")
        done = 0
        while done < len(out) and self.offset < self.size:
            blk, rel = self._block()
            if rel >= len(blk):  # the object ended early
                self.size = self.offset
                break
            k = min(len(out) - done, len(blk) - rel)
            out[done : done + k] = blk[rel : rel + k]
            done += k
            self.offset += k
        return done

    def read(self, n: int = -1) -> bytes:
        n = self.size - self.offset if n is None or n < 0 else min(n, self.size - self.offset)
        if n <= 0:
            return b""
        blk, rel = self._block()
        if 0 < rel + n <= len(blk):
            self.offset += n
            return bytes(blk[rel : rel + n])
        buf = bytearray(n)
        return bytes(buf[: self.readinto(buf)])

    def close(self) -> None:
        if not self.closed:
            self._pieces, self._end = [], 0
            self.prefetcher.forget(self.url)
        super().close()
