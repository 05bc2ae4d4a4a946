"""Reading samples by global index: open-shard reuse, sequential cursors, the error policy.

A :class:`SampleReader` serves one process (a DataLoader worker or the main process). It
keeps up to a few shards open, reads each sequentially, decodes and validates samples
against the shard set's specs, and applies the dataset's ``on_error`` policy.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from loffdata.cache import ShardCache
from loffdata.errors import LoffError, SampleError, ShardReadError
from loffdata.format import (
    FEATURES_SUFFIX,
    Sample,
    decode_sample,
    features_match,
    split_member_name,
)
from loffdata.manifest import TensorSpec
from loffdata.plan import sample_locations
from loffdata.remote import ResumableReader, filesystem, is_local, open_shard
from loffdata.tarstream import iter_sample_members

if TYPE_CHECKING:
    from loffdata.dataset import StreamingDataset

__all__ = ["ReadArena", "SampleReader", "with_substitutes"]

_MAX_OPEN_SHARDS = 8


class ReadArena:
    """A reused ring of read buffers, so that reading a member allocates nothing.

    Fresh allocations of large buffers page-fault on every byte (the kernel zero-fills new
    pages); reading into the same memory again does not. A member's view stays valid while
    the same arena reads about three more samples, so each shard cursor has its own arena
    (a cursor holds at most one sample of look-ahead), and only consumers that copy each
    sample at once (batch assembly) use them.
    """

    def __init__(self) -> None:
        self.buf, self.pos = bytearray(0), 0

    def alloc(self, n: int) -> memoryview:
        if 4 * n > len(self.buf):
            self.buf, self.pos = bytearray(8 * n), 0  # old views keep the old buffer alive
        if self.pos + n > len(self.buf):
            self.pos = 0
        view = memoryview(self.buf)[self.pos : self.pos + n]
        self.pos += n
        return view


class _ShardCursor:
    """A shard read sequentially; hands out the samples asked for, in increasing order."""

    def __init__(self, url: str, file: BinaryIO, count: int, *, reuse_buffers: bool = False):
        self.url, self.file, self.count = url, file, count
        alloc = ReadArena().alloc if reuse_buffers else None  # one per cursor: see ReadArena
        self.members = iter_sample_members(file, shard=url, alloc=alloc, direct=self._direct)
        self.pos = 0
        #: sample number in the shard -> buffer its feature data is read into (batch rows)
        self.destinations: dict[int, memoryview] = {}
        self._member_key, self._member_pos = None, -1

    def _direct(self, name: str, size: int) -> memoryview | None:
        key, suffix = split_member_name(name)
        if key != self._member_key:
            self._member_key, self._member_pos = key, self._member_pos + 1
        if suffix != FEATURES_SUFFIX or not self.destinations:
            return None
        dst = self.destinations.pop(self._member_pos, None)
        return dst if dst is not None and len(dst) < size else None

    def take(self, local: int) -> tuple[str, dict[str, bytes]]:
        """Sample number ``local`` (skipping those before it without decoding)."""
        while True:
            try:
                key, members = next(self.members)
            except StopIteration:
                raise ShardReadError(
                    f"shard {self.url!r} ended after {self.pos} samples, manifest says {self.count}"
                ) from None
            self.pos += 1
            if self.pos > local:
                return key, members

    def close(self) -> None:
        self.file.close()


class SampleReader:
    """Reads samples by global index for one process, with open-shard reuse and error policy."""

    def __init__(self, ds: StreamingDataset, *, reuse_buffers: bool = False):
        self.ds, self.shards, self.reuse_buffers = ds, ds.shards, reuse_buffers
        self.cursors: OrderedDict[int, _ShardCursor] = OrderedDict()
        self.broken: dict[int, int] = {}  # shard -> first unreadable sample
        self.fs: dict[str, tuple[Any, str]] = {}
        self.cache = ShardCache(ds.cache) if ds.cache is not None else None

    def each(self, indices: np.ndarray, destinations: dict[int, memoryview] | None = None) -> Iterator[tuple[int, Sample]]:
        """Yields ``(global index, sample)`` for the sorted, unique ``indices`` as they are read.

        ``destinations`` (global index -> writable buffer of the feature data's size) asks
        for samples' feature data to be read straight into those buffers, where possible;
        the yielded features are then views of them. In skip mode, samples that cannot be
        read or decoded are left out (and counted).
        """
        shard_ids, locals_ = sample_locations(self.shards.counts, indices)
        bounds = np.flatnonzero(np.diff(shard_ids)) + 1
        for lo, hi in zip([0, *bounds.tolist()], [*bounds.tolist(), len(indices)]):
            s, gids, locs = int(shard_ids[lo]), indices[lo:hi], locals_[lo:hi]
            cursor = self._aim(s, gids, locs, destinations) if destinations else None
            try:
                yield from self._each_in_shard(s, gids, locs)
            finally:
                if cursor is not None:
                    cursor.destinations.clear()

    def _aim(self, s: int, gids: np.ndarray, locs: np.ndarray, destinations: dict[int, memoryview]) -> _ShardCursor | None:
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
            self.ds._skip(err, n=len(gids) - done)
            return
        if done < len(gids):
            msg = f"shard {self.shards.urls[s]!r} is unreadable from sample {limit} on (see the earlier error)"
            self.ds._skip(ShardReadError(msg), n=len(gids) - done)

    def _read_one(self, s: int, loc: int) -> Sample | None:
        cursor = self._cursor(s, loc)
        key, members = cursor.take(loc)
        if cursor.pos >= self.shards.counts[s]:
            self._drop_cursor(s)
        try:
            return self._decode(key, members, self.shards.urls[s])
        except SampleError as err:
            self.ds._skip(err, n=1)
            return None

    def _decode(self, key: str, members: dict[str, bytes], url: str) -> Sample:
        sample = decode_sample(key, members, shard=url)
        spec = self.shards.features
        problem = features_match(sample.features, spec.shape, spec.dtype)
        if problem:
            raise SampleError(problem, shard=url, key=key)
        for name, extra in self.shards.extras.items():
            self._check_extra(sample, name, extra, url)
        return sample

    def _check_extra(self, sample: Sample, name: str, spec: TensorSpec, url: str) -> None:
        value = sample.extras.get(name)
        if value is None:
            if self.ds.batch_size:
                raise SampleError(
                    f"sample has no extra {name!r}, which the manifest declares",
                    shard=url,
                    key=sample.key,
                )
            return
        if tuple(value.shape) != tuple(spec.shape):
            raise SampleError(
                f"extra {name!r} has shape {list(value.shape)}, manifest says {list(spec.shape)}",
                shard=url,
                key=sample.key,
            )

    def _cursor(self, s: int, loc: int) -> _ShardCursor:
        cur = self.cursors.get(s)
        if cur is None or cur.pos > loc:
            self._drop_cursor(s)
            cur = _ShardCursor(self.shards.urls[s], self._open(s), self.shards.counts[s], reuse_buffers=self.reuse_buffers)
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
            return ResumableReader(url, fs, path, retry=self.ds.retry)
        return self._open_cached(url, fs, path, self.shards.sizes[s])

    def _open_cached(self, url: str, fs: Any, path: str, size: int | None) -> BinaryIO:
        def opener() -> BinaryIO:
            return ResumableReader(url, fs, path, retry=self.ds.retry)

        for _ in range(3):  # another process may evict the file between get and open
            try:
                return open(self.cache.get(url, opener, size=size), "rb", buffering=1 << 20)  # noqa: SIM115
            except FileNotFoundError:
                continue
        raise ShardReadError(
            f"cached copy of shard {url!r} keeps disappearing; is cache_limit_bytes too small?"
        )

    def _filesystem(self, url: str) -> tuple[Any, str]:
        protocol = url.split("://", 1)[0]
        if protocol not in self.fs:
            self.fs[protocol] = filesystem(url, self.ds.storage_options, self.ds.retry)
        fs = self.fs[protocol][0]
        return fs, fs._strip_protocol(url)

    def close(self) -> None:
        for s in list(self.cursors):
            self._drop_cursor(s)


def with_substitutes(
    reader: SampleReader, indices: np.ndarray, window: int
) -> Iterator[tuple[int, Sample]]:
    """Yields ``(global index, sample)`` for ``indices`` in order, reading a window at a time.

    A sample that could not be read (skip mode) is replaced by the previous good sample of
    this worker, or, before the first good one, by the next good one, so counts never change.
    """
    last, debt = None, 0
    for lo in range(0, len(indices), window):
        chunk = indices[lo : lo + window]
        loaded = reader.load(np.unique(chunk))
        for gid in chunk.tolist():
            sample = loaded.get(gid)
            if sample is None:
                if last is None:
                    debt += 1
                    continue
                yield last
                continue
            last = (gid, sample)
            for _ in range(debt + 1):
                yield last
            debt = 0
    if debt:
        raise LoffError(
            f"on_error='skip' found no readable sample to stand in for {debt} unreadable ones"
        )


