"""What a sample reader needs of prefetch: the plan in, file objects of remote shards out.

A reader reads either whole shards a shuffle window at a time (the shards' prefixes are
prefetched in blocks, :class:`~loffdata.storage.prefetch.by_shard.Prefetcher`), or, for indexed
shards read into batches, sample by sample: only the byte ranges of this process's own
samples are fetched (:class:`~loffdata.storage.prefetch.by_sample.RangePrefetcher`), so the first
batch comes after one round trip, and workers that each read every other batch of a
window do not each fetch the whole window's shards. Local shards are never prefetched;
with a cache, whole shards are downloaded into it ahead of the reader.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from loffdata.storage.prefetch.by_sample import (
    RangePrefetcher,
    planned_ranges,
    sample_ranges,
)
from loffdata.storage.prefetch.by_shard import (
    PrefetchConfig,
    PrefetchedFile,
    Prefetcher,
    ShardRead,
    bytes_needed,
    read_order,
)
from loffdata.storage.retry import RetryConfig

__all__ = ["AHEAD_WINDOWS", "RemoteReads"]

#: windows of a by-sample plan whose ranges are planned ahead of the reader
AHEAD_WINDOWS = 2


@dataclass
class _SampledPlan:
    """A by-sample plan: its indices, planned ``step`` at a time, read ``batch`` at a time.
    ``indices`` stay lazy (a worker's :class:`~loffdata.stream.order.BatchIndices`): only
    the steps planned are ever computed, never the whole epoch's (10 M samples: ~1 s a
    worker before its first request)."""

    indices: Sequence[int] | np.ndarray
    step: int
    batch: int
    planned: int = 0  # samples whose ranges are planned
    done: int = 0  # samples the reader has read

    @property
    def ahead(self) -> int:
        return AHEAD_WINDOWS * self.step


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
        preload: loads the indexes of several shards at once (remote sidecars fetched
            concurrently) before their offsets are read.
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
        preload: Callable[[list[int]], None] | None = None,
    ):
        self.urls, self.counts, self.sizes, self.offsets = urls, counts, sizes, offsets
        self.retry, self.config, self.filesystem, self.cache = retry, config, filesystem, cache
        self.preload = preload
        self.prefetcher: Prefetcher | None = None
        self._sampled: _SampledPlan | None = None
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

        By sample (``sampled`` and a ``batch``): every sample's byte range, ``batch`` at a
        time, planned a window at a time (``first``: the samples of the first plan step,
        default one window) and :data:`AHEAD_WINDOWS` ahead of the reader (see
        :meth:`reached`), so only this process's samples are fetched and the first batch
        waits for its own samples. Else whole shards' prefixes, ``window`` at a time.
        """
        if self._active() is None:
            return
        if self.sampled and batch:
            step = max(batch, -(-(first or window) // batch) * batch)
            self._sampled = _SampledPlan(indices, step, batch)
            self.prefetcher.plan_ranges(())
            self.reached(0)
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

    def reached(self, n: int) -> None:
        """The reader has read ``n`` more samples of a by-sample plan: plans the ranges of
        the next windows (their indexes loaded here, in the reader's thread, concurrently,
        never in the prefetcher's callbacks)."""
        plan = self._sampled
        if plan is None:
            return
        plan.done += n
        while plan.planned < len(plan.indices) and plan.planned - plan.done < plan.ahead:
            chunk = plan.indices[plan.planned : plan.planned + plan.step]
            plan.planned += len(chunk)
            offsets = self._offsets_of(chunk)
            ranges = sample_ranges(
                self.counts, offsets, chunk, plan.batch, block_size=self.retry.block_size
            )
            self.prefetcher.extend_ranges(planned_ranges(self.read, ranges))

    def _offsets_of(self, indices: np.ndarray) -> dict[int, np.ndarray]:
        """The offsets of the shards ``indices`` lie in, loaded here (sidecars fetched
        together, see ``preload``): indexes may be sidecars read on first use, which must
        not happen in the prefetcher's callbacks."""
        starts = np.concatenate([[0], np.cumsum(self.counts, dtype=np.int64)])
        shards = np.unique(
            np.searchsorted(starts, np.asarray(indices, dtype=np.int64), side="right") - 1
        ).tolist()
        if self.preload is not None:
            self.preload(shards)
        return {s: self.offsets[s] for s in shards}

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
