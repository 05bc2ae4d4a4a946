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

from collections.abc import Callable
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
    """A by-sample plan: its indices (an array, or a lazy sequence sliced a step at a time:
    a worker's plan is never materialised whole), planned ``step`` at a time, read ``batch``
    at a time."""

    indices: Any
    step: int
    batch: int
    horizon: int = 0  # batches apart whose neighbouring samples share a request
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
        waits for its own samples: the indexes of the windows planned now are loaded in one
        round trip, and the first batch's ranges go first, coalesced with no later batch's.
        Else whole shards' prefixes, ``window`` at a time.
        """
        if self._active() is None:
            return
        if self.sampled and batch:
            step = max(batch, -(-(first or window) // batch) * batch)
            plan = self._sampled = _SampledPlan(indices, step, batch, self._horizon(batch))
            self.prefetcher.plan_ranges(())
            self._load_indexes(plan.indices[: plan.ahead])
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

    def _horizon(self, batch: int) -> int:
        """How many batches apart a reader's neighbouring samples may be to share a request:
        the bytes kept for later batches (at most this many batches' worth) stay within
        half of ``PrefetchConfig.budget_bytes``."""
        known = [(n, c) for n, c in zip(self.sizes, self.counts) if n is not None and c]
        if not known:
            return 0
        per_sample = sum(n for n, _ in known) / sum(c for _, c in known)
        return int(self.config.budget_bytes // 2 // max(1.0, batch * per_sample))

    def reached(self, n: int) -> None:
        """The reader has read ``n`` more samples of a by-sample plan: plans the ranges of
        the next windows (their indexes loaded here, in the reader's thread, concurrently,
        never in the prefetcher's callbacks)."""
        plan = self._sampled
        if plan is None:
            return
        plan.done += n
        self.prefetcher.release(plan.done)
        while plan.planned < len(plan.indices) and plan.planned - plan.done < plan.ahead:
            at = plan.planned  # the first batch alone, then to the end of each step
            chunk = plan.indices[at : (at // plan.step + 1) * plan.step if at else plan.batch]
            plan.planned += len(chunk)
            offsets = {s: self.offsets[s] for s in self._load_indexes(chunk)}
            ranges = sample_ranges(
                self.counts,
                offsets,
                chunk,
                plan.batch,
                block_size=self.retry.block_size,
                horizon=plan.horizon,
            )
            self.prefetcher.extend_ranges(planned_ranges(self.read, ranges, at))

    def _load_indexes(self, indices: np.ndarray) -> list[int]:
        """The shards ``indices`` lie in, in the order first needed, their indexes loaded here
        (sidecars fetched together, see ``preload``): indexes may be sidecars read on first
        use, which must not happen in the prefetcher's callbacks."""
        starts = np.concatenate([[0], np.cumsum(self.counts, dtype=np.int64)])
        sid = np.searchsorted(starts, np.asarray(indices, dtype=np.int64), side="right") - 1
        shards, first = np.unique(sid, return_index=True)
        shards = shards[np.argsort(first)].tolist()
        if self.preload is not None:
            self.preload(shards)
        return shards

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
