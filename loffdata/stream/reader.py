"""Reading samples by global index: open-shard reuse, sequential cursors, random access.

A :class:`SampleReader` serves one process (a DataLoader worker or the main process). It
gets what it reads from a :class:`ReadContext` (the shards, storage options, retries, cache)
and hands every error to an :class:`~loffdata.stream.policy.ErrorPolicy`; it knows nothing
of the dataset object. Shards are read sequentially, or, when they are local (or cached)
and indexed, by random access (:mod:`loffdata.stream.scatter`). Samples are decoded and
validated against the shard set's specs.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from loffdata.compat import strip_protocol
from loffdata.errors import SampleError, ShardReadError
from loffdata.format.sample import Sample, decode_sample
from loffdata.storage.cache import CacheConfig, ShardCache
from loffdata.storage.prefetch.by_shard import PrefetchConfig
from loffdata.storage.prefetch.reads import RemoteReads
from loffdata.storage.retry import RetryConfig
from loffdata.storage.shardfile import (
    _LOCAL_BUFFER,
    ResumableReader,
    filesystem,
    is_local,
    open_shard,
)
from loffdata.stream import scatter
from loffdata.stream.checks import SampleRules, check_sample
from loffdata.stream.cursor import ReadArena, ShardCursor
from loffdata.stream.plan import sample_locations
from loffdata.stream.policy import ErrorPolicy
from loffdata.stream.sources import ShardSet

__all__ = ["ReadContext", "ReadArena", "SampleReader", "substituted"]

_MAX_OPEN_SHARDS = 8


@dataclass(frozen=True)
class ReadContext:
    """What a :class:`SampleReader` reads and how.

    Attributes:
        shards: the shard set (URLs, counts, specs, indexes).
        storage_options: passed to fsspec.
        retry: timeouts and retries of remote reads.
        cache: local cache of remote shards, or ``None``.
        batched: samples go into batches: every declared extra must be present.
        prefetch: requests in flight and byte budget of remote reads.
        labels: a mix's label unification table for these shards (see
            :class:`~loffdata.stream.checks.SampleRules`), or ``None``.
    """

    shards: ShardSet
    storage_options: dict[str, Any] = field(default_factory=dict)
    retry: RetryConfig = field(default_factory=RetryConfig)
    cache: CacheConfig | None = None
    batched: bool = False
    prefetch: PrefetchConfig = field(default_factory=PrefetchConfig)
    labels: np.ndarray | None = None


class SampleReader:
    """Reads samples by global index for one process, with open-shard reuse and error policy.

    Args:
        context: the shards and how to reach them.
        policy: what happens to unreadable samples (shared with the caller, who may read
            its counters).
        reuse_buffers: read members into reused buffers (for consumers that copy each
            sample at once, such as batch assembly).
    """

    def __init__(self, context: ReadContext, policy: ErrorPolicy, *, reuse_buffers: bool = False):
        self.context, self.policy, self.reuse_buffers = context, policy, reuse_buffers
        self.shards = context.shards
        #: what every sample must be (:mod:`loffdata.stream.checks`, shared by every read path)
        self.rules = SampleRules.of(self.shards, batched=context.batched, labels=context.labels)
        self.cursors: OrderedDict[int, ShardCursor] = OrderedDict()
        self.broken: dict[int, int] = {}  # shard -> first unreadable sample
        self.fs: dict[str, tuple[Any, str]] = {}
        self.cache = ShardCache(context.cache) if context.cache is not None else None
        if self.cache is not None:  # a cached copy is served only if it matches the manifest
            for url, digest in zip(self.shards.urls, self.shards.sha256 or []):
                self.cache.expect(url, digest)
        local = context.cache is not None or all(map(is_local, self.shards.urls))
        offsets = self.shards.offsets() if self.shards.indexed else None
        #: plan-driven prefetch of remote shards (see :meth:`plan_reads`)
        self.remote = self._remote_reads(offsets, local)
        #: indexed shards are read by random access: local ones with one ``preadv`` per
        #: sample, remote ones from their prefetched ranges (see :mod:`loffdata.stream.scatter`)
        self.random_access = bool(
            self.shards.indexed and ((local and scatter.AVAILABLE) or self.remote.sampled)
        )
        self.indexed = (
            scatter.IndexedShards(
                self.shards.urls,
                offsets,
                self.shards.keys(),
                self._open,
                scatter=local,
                indexes=self.shards.index,
            )
            if self.random_access
            else None
        )

    def _remote_reads(self, offsets: Any, local: bool) -> RemoteReads:
        context = self.context
        remote = RemoteReads(
            self.shards.urls,
            self.shards.counts,
            self.shards.sizes,
            retry=context.retry,
            config=context.prefetch,
            filesystem=self._filesystem,
            cache=self.cache,
            offsets=offsets,
            preload=getattr(self.shards.index, "prefetch", None),
        )
        # indexed remote shards read into batches are fetched by sample (their byte ranges)
        # (not with prefetch off: one request per sample, in turn, is slower than streaming)
        remote.sampled = (
            not local
            and remote.by_sample
            and context.batched
            and context.prefetch.requests > 0
            and self.shards.features.dtype != "int8"
        )
        return remote

    @property
    def sampled(self) -> bool:
        """Remote shards are read by sample (see :meth:`plan_reads`)."""
        return self.remote.sampled

    def plan_reads(
        self,
        indices: np.ndarray,
        window: int,
        *,
        batch: int | None = None,
        first: int | None = None,
    ) -> None:
        """Tells storage which samples this reader will read (``window`` at a time: a shuffle
        window, or a batch when reading by random access), so that remote shards (or their
        samples' byte ranges) are fetched ahead, many requests in flight
        (:mod:`loffdata.storage.prefetch.reads`). ``batch`` and ``first``: batches are read, and the
        first ``first`` samples (default: one window) one batch at a time by random access."""
        self.remote.plan(indices, window, batch=batch, first=first)

    def each(
        self,
        indices: np.ndarray,
        destinations: dict[int, memoryview] | None = None,
        *,
        random: bool = True,
    ) -> Iterator[tuple[int, Sample]]:
        """Yields ``(global index, sample)`` for the sorted, unique ``indices`` as they are read.

        ``destinations`` (global index -> writable buffer of the feature data's size) asks
        for samples' feature data to be read straight into those buffers, where possible;
        the yielded features are then views of them. Samples with a destination are read by
        random access when the shards allow it and ``random``. In skip mode, samples that
        cannot be read or decoded are left out (and counted).
        """
        shard_ids, locals_ = sample_locations(self.shards.counts, indices)
        if random and destinations and self.indexed is not None:
            missed = yield from self._random(indices, shard_ids, locals_, destinations)
            self.remote.reached(len(indices))  # plans the byte ranges of the next windows
            indices, shard_ids, locals_ = indices[missed], shard_ids[missed], locals_[missed]
        bounds = np.flatnonzero(np.diff(shard_ids)) + 1
        for lo, hi in zip([0, *bounds.tolist()], [*bounds.tolist(), len(indices)]):
            if lo == hi:
                break
            s, gids, locs = int(shard_ids[lo]), indices[lo:hi], locals_[lo:hi]
            cursor = self._aim(s, gids, locs, destinations) if destinations else None
            try:
                yield from self._each_in_shard(s, gids, locs)
            finally:
                if cursor is not None:
                    cursor.destinations.clear()

    def _random(
        self,
        indices: np.ndarray,
        shard_ids: np.ndarray,
        locals_: np.ndarray,
        destinations: dict[int, memoryview],
    ) -> Iterator[tuple[int, Sample]]:
        """Reads the samples that have a destination by random access; returns the mask of
        the others (read in sequence). A sample that cannot be read costs only itself."""
        missed = np.ones(len(indices), dtype=bool)
        wants, where = [], []
        for p, (gid, s, loc) in enumerate(
            zip(indices.tolist(), shard_ids.tolist(), locals_.tolist())
        ):
            dst = destinations.get(gid)
            if dst is not None and self.indexed.usable(s):
                missed[p] = False
                wants.append((s, loc, dst))
                where.append(gid)
        for q, got in self.indexed.read(wants):
            s = wants[q][0]
            if isinstance(got, ShardReadError):
                self.policy.skip(got, n=1)
                continue
            sample = self._checked(got[0], got[1], s)
            if sample is not None:
                yield where[q], sample
        return missed

    def _aim(
        self, s: int, gids: np.ndarray, locs: np.ndarray, destinations: dict[int, memoryview]
    ) -> ShardCursor | None:
        """Tells the shard's cursor where the feature data of these samples should go."""
        if int(locs[0]) >= self.broken.get(s, 1 << 62):
            return None
        try:
            cursor = self._cursor(s, int(locs[0]))
        except ShardReadError:
            return None  # reading the samples meets the same error and applies the policy
        for gid, loc in zip(gids.tolist(), locs.tolist()):
            if gid in destinations:
                cursor.destinations[loc] = destinations[gid]
        return cursor

    def load(self, indices: np.ndarray) -> dict[int, Sample]:
        """``dict(each(indices))``."""
        return dict(self.each(indices))

    def _each_in_shard(
        self, s: int, gids: np.ndarray, locs: np.ndarray
    ) -> Iterator[tuple[int, Sample]]:
        done, limit = 0, self.broken.get(s, 1 << 62)
        try:
            for gid, loc in zip(gids.tolist(), locs.tolist()):
                if loc >= limit:
                    break
                sample = self._read_one(s, loc)
                done += 1
                if sample is not None:
                    yield gid, sample
        except ShardReadError as err:
            self._drop_cursor(s)
            self.broken[s] = min(limit, int(locs[done]))
            self.policy.skip(err, n=len(gids) - done)
            return
        if done < len(gids):
            msg = (
                f"shard {self.shards.urls[s]!r} is unreadable from sample {limit} on "
                "(see the earlier error)"
            )
            self.policy.skip(ShardReadError(msg), n=len(gids) - done)

    def _read_one(self, s: int, loc: int) -> Sample | None:
        cursor = self._cursor(s, loc)
        key, members = cursor.take(loc)
        if cursor.pos >= self.shards.counts[s]:
            self._drop_cursor(s)
        return self._checked(key, members, s)

    def _checked(self, key: str, members: dict, s: int) -> Sample | None:
        """The decoded, validated sample; ``None`` (counted) if bad in skip mode."""
        try:
            return self._decode(key, members, self.shards.urls[s])
        except SampleError as err:
            self.policy.skip(err, n=1)
            return None

    def _decode(self, key: str, members: dict[str, bytes], url: str) -> Sample:
        return check_sample(decode_sample(key, members, shard=url), self.rules, shard=url)

    def _cursor(self, s: int, loc: int) -> ShardCursor:
        cur = self.cursors.get(s)
        if cur is None or cur.pos > loc:
            self._drop_cursor(s)
            index = _index_of(
                self.shards.index, s, read=is_local(self.shards.urls[s]) or self.cache is not None
            )
            cur = ShardCursor(
                self.shards.urls[s],
                self._open(s),
                self.shards.counts[s],
                reuse_buffers=self.reuse_buffers,
                keys=None if index is None else index[1],
            )
            self.cursors[s] = cur
            while len(self.cursors) > _MAX_OPEN_SHARDS:
                self._drop_cursor(next(iter(self.cursors)))
        self.cursors.move_to_end(s)
        return cur

    def _drop_cursor(self, s: int) -> None:
        cur = self.cursors.pop(s, None)
        if cur is not None:
            cur.close()

    def _open(self, s: int) -> BinaryIO:
        url = self.shards.urls[s]
        if is_local(url):
            return open_shard(url)
        fs, path = self._filesystem(url)
        if self.cache is None:
            return self.remote.open(s) or ResumableReader(url, fs, path, retry=self.context.retry)
        return self._open_cached(url, fs, path, self.shards.sizes[s], self.remote.opener(s))

    def _open_cached(
        self, url: str, fs: Any, path: str, size: int | None, prefetched: Any = None
    ) -> BinaryIO:
        def opener() -> BinaryIO:
            return (
                prefetched()
                if prefetched
                else ResumableReader(url, fs, path, retry=self.context.retry)
            )

        for _ in range(3):  # another process may evict the file between get and open
            try:
                return open(self.cache.get(url, opener, size=size), "rb", buffering=_LOCAL_BUFFER)  # noqa: SIM115
            except FileNotFoundError:
                continue
        raise ShardReadError(
            f"cached copy of shard {url!r} keeps disappearing; is cache_limit_bytes too small?"
        )

    def _filesystem(self, url: str) -> tuple[Any, str]:
        protocol = url.split("://", 1)[0]
        if protocol not in self.fs:
            self.fs[protocol] = filesystem(url, self.context.storage_options, self.context.retry)
        fs = self.fs[protocol][0]
        return fs, strip_protocol(fs, url)

    def close(self) -> None:
        self.remote.close()
        for s in list(self.cursors):
            self._drop_cursor(s)
        if self.indexed is not None:
            self.indexed.close()


def _index_of(indexes: Any, s: int, *, read: bool = True) -> Any:
    """Shard ``s``'s index, ``None`` if it has none (or an unusable sidecar: see
    :meth:`~loffdata.stream.indexes.ShardIndexes.get`). Without ``read``, only an index
    already in memory: a remote shard read in sequence does not wait for its sidecar."""
    if not indexes:
        return None
    if not hasattr(indexes, "get"):
        return indexes[s]
    return indexes.get(s) if read else indexes.loaded(s)


def substituted(
    reader: SampleReader, indices: np.ndarray, window: int
) -> Iterator[tuple[int, Sample]]:
    """Yields ``(global index, sample)`` for ``indices`` in order, reading a window at a time.

    A sample that could not be read (skip mode) gets a stand-in from the reader's policy
    (:class:`~loffdata.stream.policy.StandIns`), so counts never change.
    """

    def copy(dst: tuple[list, int], src: tuple[list, int]) -> None:
        dst[0][dst[1]] = src[0][src[1]]

    stand_ins = reader.policy.stand_ins(copy)
    held: list[list] = []  # windows waiting for a good sample to stand in for their first ones
    for lo in range(0, len(indices), window):
        chunk = indices[lo : lo + window].tolist()
        loaded = reader.load(np.unique(indices[lo : lo + window]))
        out = [(gid, loaded[gid]) if gid in loaded else None for gid in chunk]
        held.append(out)
        if stand_ins.fill([(out, i) for i in range(len(out))], [x is not None for x in out]):
            for items in held:
                yield from items
            held = []
    stand_ins.finish()
