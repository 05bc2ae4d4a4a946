"""Plan-driven prefetch: many ranged GETs in flight for the shards a reader will read next.

The epoch plan is a pure function of (seed, epoch), so a reading process knows, before it
reads anything, which shards it will read and in which order (:meth:`Prefetcher.plan`).
The prefetcher cuts those shards into blocks of ``retry.block_size`` bytes and keeps up to
``PrefetchConfig.requests`` of them in flight, in read order and across shard boundaries,
while the bytes fetched and not yet read (in flight included) stay within
``PrefetchConfig.budget_bytes``. A shard is read through a :class:`PrefetchedFile`, which
takes its blocks in turn (a block nobody fetched yet is fetched at once, first in line).

The requests run as coroutines on fsspec's IO loop (aiohttp for HTTP, aiobotocore for S3;
see :mod:`loffdata.storage.ranges`), each with the retries, backoff, deadline and
resume-from-offset of :mod:`loffdata.storage.remote`; a block's error is raised when the
reader takes that block, so a shard never read never fails the epoch.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from loffdata.storage.ranges import Pin, fetch_range
from loffdata.storage.remote import RetryConfig, with_retries_async

__all__ = ["PrefetchConfig", "Prefetcher", "PrefetchedFile", "ShardRead", "read_order", "bytes_needed"]


@dataclass(frozen=True)
class PrefetchConfig:
    """How far remote reads run ahead of the reader, per reading process (DataLoader worker).

    The defaults suit a cloud GPU node reading an object store (50-200 MB/s and 20-100 ms
    to first byte per request): 16 requests of 8 MiB (``RetryConfig.block_size``) in flight
    keep ~1-3 GB/s per worker busy; see docs/streaming.md for sizing.

    Attributes:
        requests: ranged GETs in flight per process; ``0`` turns prefetch off (one
            sequential read with one block of read-ahead per shard).
        budget_bytes: bytes fetched ahead and not yet read, in flight included (the
            memory prefetch may hold per process; with a cache, the bytes downloaded ahead).
    """

    requests: int = 16
    budget_bytes: int = 256 << 20

    def __post_init__(self) -> None:
        if self.requests < 0 or self.budget_bytes < 1:
            raise ValueError("requests must be >= 0 and budget_bytes >= 1")


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
        loop = getattr(e.read.fs, "loop", None) or _io_loop()
        fut = asyncio.run_coroutine_threadsafe(self._fetch(e, start, start + n), loop)
        e.blocks[start] = (n, fut)
        fut.add_done_callback(self._done)
        return fut

    def _done(self, _fut: Future) -> None:
        with self._lock:
            self.in_flight -= 1
        self._pump()

    async def _fetch(self, e: _Entry, start: int, end: int) -> bytes:
        """Bytes ``[start, end)``; a short answer (dropped connection) is completed from the
        offset reached."""
        r, parts, pos = e.read, [], start
        while pos < end:
            data = await with_retries_async(
                lambda p=pos: fetch_range(r.fs, r.path, p, end, e.pin), url=r.url, retry=self.retry
            )
            if not data:  # the object ends here (shorter than its manifest entry): the
                break  # reader meets the end of the data and reports a truncated shard
            parts.append(data)
            pos += len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    # -- consumption ----------------------------------------------------------------------

    def take(self, e: _Entry, start: int) -> bytes:
        """The bytes of ``e``'s shard from ``start`` (one block; fetched now if not ahead)."""
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
        return got[1].result()

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


def _io_loop() -> asyncio.AbstractEventLoop:
    from fsspec.asyn import get_loop

    return get_loop()


class PrefetchedFile(io.RawIOBase):
    """A read-only file over a :class:`Prefetcher`'s blocks of one shard."""

    def __init__(self, prefetcher: Prefetcher, entry: _Entry):
        super().__init__()
        self.prefetcher, self.entry, self.url = prefetcher, entry, entry.read.url
        self.size, self.offset = entry.read.size, 0
        self._buf, self._buf_start = b"", 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.offset

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.offset, io.SEEK_END: self.size}[whence]
        self.offset = max(0, base + offset)
        return self.offset

    def _block(self) -> tuple[memoryview, int]:
        """The block holding the current offset, and the offset's position in it."""
        rel = self.offset - self._buf_start
        if not 0 <= rel < len(self._buf):
            self._buf, self._buf_start = b"", self.offset
            self._buf = memoryview(self.prefetcher.take(self.entry, self.offset))
            rel = 0
        return self._buf, rel

    def readinto(self, b: Any) -> int:
        out = memoryview(b).cast("B")
        done = 0
        while done < len(out) and self.offset < self.size:
            blk, rel = self._block()
            if not len(blk):  # the object ended early
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
            self._buf = b""
            self.prefetcher.forget(self.url)
        super().close()


class RemoteReads:
    """What a sample reader needs of prefetch: the plan in, file objects of shards out.

    Args:
        urls: shard URLs; ``counts``, ``sizes``: samples and bytes of each (``None``: unknown,
            such shards are not prefetched).
        retry: retries, timeouts and block size.
        config: prefetch depth and budget.
        filesystem: ``url -> (fs, path)``.
        cache: the local cache (then whole shards are prefetched into it).
    """

    def __init__(self, urls: list[str], counts: list[int], sizes: list[int | None], *, retry: RetryConfig,
                 config: PrefetchConfig, filesystem: Callable[[str], tuple[Any, str]], cache: Any = None):
        self.urls, self.counts, self.sizes = urls, counts, sizes
        self.retry, self.config, self.filesystem, self.cache = retry, config, filesystem, cache
        self.prefetcher: Prefetcher | None = None
        self.filler: Any = None

    def _active(self) -> Prefetcher | None:
        if self.prefetcher is None and self.config.requests and not all("://" not in u or u.startswith("file://")
                                                                         for u in self.urls):
            self.prefetcher = Prefetcher(self.config, self.retry)
            if self.cache is not None:
                from loffdata.storage.cache import CacheFiller

                self.filler = CacheFiller(self.cache, self.prefetcher, ahead_bytes=self.config.budget_bytes)
        return self.prefetcher

    def read(self, s: int, samples: int | None = None) -> ShardRead | None:
        """Shard ``s`` as a :class:`ShardRead` (its first ``samples`` needed), if prefetchable."""
        url, size = self.urls[s], self.sizes[s]
        if size is None or "://" not in url or url.startswith("file://") or self._active() is None:
            return None
        fs, path = self.filesystem(url)
        whole = self.cache is not None or samples is None
        end = size if whole else bytes_needed(size, self.counts[s], samples, self.retry.block_size)
        return ShardRead(url, fs, path, size, end)

    def plan(self, indices: np.ndarray, window: int) -> None:
        """Prefetches the shards of ``indices`` (read ``window`` at a time), in read order."""
        if self._active() is None:
            return
        reads = [r for s, n in read_order(self.counts, indices, window) if (r := self.read(s, n)) is not None]
        if self.filler is not None:
            self.filler.fill(reads)
        else:
            self.prefetcher.plan(reads)

    def open(self, s: int) -> PrefetchedFile | None:
        """Shard ``s`` read through the prefetcher (``None``: not prefetchable)."""
        read = self.read(s)
        return None if read is None else self.prefetcher.open(read)

    def opener(self, s: int) -> Callable[[], PrefetchedFile] | None:
        """For the cache: a function opening shard ``s`` through the prefetcher, told that
        the reader has come this far."""
        read = self.read(s)
        if read is None:
            return None
        if self.filler is not None:
            self.filler.reached(read.url)
        return lambda: self.prefetcher.open(read)

    def close(self) -> None:
        if self.filler is not None:
            self.filler.close()
        if self.prefetcher is not None:
            self.prefetcher.close()
