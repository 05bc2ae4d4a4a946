"""What a sample reader needs of prefetch: the plan in, file objects of remote shards out.

A reader reads either whole shards a shuffle window at a time (the shards' prefixes are
prefetched in blocks, :class:`~loffdata.storage.prefetch.Prefetcher`), or, for indexed
shards read into batches, its first window sample by sample (only those samples' byte
ranges are fetched, :class:`~loffdata.storage.rangefetch.RangePrefetcher`, so the first
batch comes after one round trip) and the rest in blocks again (fewer, larger requests
stream faster once the reader is ahead). Local shards are never prefetched;
with a cache, whole shards are downloaded into it ahead of the reader.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from loffdata.storage.prefetch import (
    PrefetchConfig,
    PrefetchedFile,
    Prefetcher,
    ShardRead,
    bytes_needed,
    read_order,
)
from loffdata.storage.rangefetch import (
    RangePrefetcher,
    RangeRead,
    block_ranges,
    planned_ranges,
    sample_ranges,
)
from loffdata.storage.remote import RetryConfig

__all__ = ["RemoteReads"]


def _remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


class RemoteReads:
    """The prefetch of one reading process.

    Args:
        urls: shard URLs; ``counts``, ``sizes``: samples and bytes of each (``None``: unknown,
            such shards are not prefetched).
        retry: retries, timeouts and block size.
        config: prefetch depth and budget.
        filesystem: ``url -> (fs, path)``.
        cache: the local cache (then whole shards are prefetched into it).
        offsets: the shards' index offsets (``None``: not indexed; no reading by sample).
    """

    def __init__(
        self,
        urls: list[str],
        counts: list[int],
        sizes: list[int | None],
        *,
        retry: RetryConfig,
        config: PrefetchConfig,
        filesystem: Callable[[str], tuple[Any, str]],
        cache: Any = None,
        offsets: list[np.ndarray] | None = None,
    ):
        self.urls, self.counts, self.sizes, self.offsets = urls, counts, sizes, offsets
        self.retry, self.config, self.filesystem, self.cache = retry, config, filesystem, cache
        self.prefetcher: Prefetcher | None = None
        self.filler: Any = None
        #: reads indexed remote shards by sample (set by the reader, see ``by_sample``)
        self.sampled = False

    @property
    def by_sample(self) -> bool:
        """Whether samples can be fetched by their byte ranges: indexed remote shards, no
        cache, and ``PrefetchConfig.by_sample``."""
        return (
            self.config.by_sample
            and self.offsets is not None
            and self.cache is None
            and any(map(_remote, self.urls))
        )

    def _active(self) -> Prefetcher | None:
        if (
            self.prefetcher is None
            and (self.config.requests or self.sampled)
            and any(map(_remote, self.urls))
        ):
            kind = RangePrefetcher if self.sampled else Prefetcher
            self.prefetcher = kind(self.config, self.retry)
            if self.cache is not None:
                from loffdata.storage.cache import CacheFiller

                self.filler = CacheFiller(
                    self.cache, self.prefetcher, ahead_bytes=self.config.budget_bytes
                )
        return self.prefetcher

    def read(self, s: int, samples: int | None = None) -> ShardRead | None:
        """Shard ``s`` as a :class:`ShardRead` (its first ``samples`` needed), if prefetchable."""
        url, size = self.urls[s], self.sizes[s]
        if size is None or not _remote(url) or self._active() is None:
            return None
        fs, path = self.filesystem(url)
        whole = self.cache is not None or samples is None
        end = size if whole else bytes_needed(size, self.counts[s], samples, self.retry.block_size)
        return ShardRead(url, fs, path, size, end)

    def plan(
        self,
        indices: np.ndarray,
        window: int,
        *,
        batch: int | None = None,
        first: int | None = None,
    ) -> None:
        """Prefetches what reading ``indices`` needs, in read order.

        By sample (``sampled`` and a ``batch``): the first ``first`` samples (default: one
        window) by their byte ranges, ``batch`` at a time, then the rest's shards in blocks,
        ``window`` at a time; so the first batch waits for its own samples, and the epoch then
        streams in large requests. Else whole shards' prefixes, ``window`` at a time.
        """
        if self._active() is None:
            return
        if self.sampled and batch:
            first = window if first is None else first
            offsets = self._offsets_of(indices[:first])
            self.prefetcher.plan_ranges(self._sampled_plan(indices, window, batch, first, offsets))
            return
        reads = [
            r
            for s, n in read_order(self.counts, indices, window)
            if (r := self.read(s, n)) is not None
        ]
        if self.filler is not None:
            self.filler.fill(reads)
        else:
            self.prefetcher.plan(reads)

    def _offsets_of(self, indices: np.ndarray) -> dict[int, np.ndarray]:
        """The offsets of the shards ``indices`` lie in, loaded here: indexes may be sidecars
        read on first use, which must not happen in the prefetcher's callbacks."""
        starts = np.concatenate([[0], np.cumsum(self.counts, dtype=np.int64)])
        shards = np.unique(
            np.searchsorted(starts, np.asarray(indices, dtype=np.int64), side="right") - 1
        )
        return {s: self.offsets[s] for s in shards.tolist()}

    def _sampled_plan(
        self,
        indices: np.ndarray,
        window: int,
        batch: int,
        first: int,
        offsets: dict[int, np.ndarray],
    ) -> Iterator[RangeRead]:
        bs = self.retry.block_size
        yield from planned_ranges(
            self.read, sample_ranges(self.counts, offsets, indices[:first], batch, block_size=bs)
        )
        rest = [
            r
            for s, n in read_order(self.counts, indices[first:], window)
            if (r := self.read(s, n)) is not None
        ]
        yield from block_ranges(rest, bs)

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
