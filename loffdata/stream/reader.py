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

from loffdata.errors import LoffError, SampleError, ShardReadError
from loffdata.format import codec
from loffdata.format.manifest import TensorSpec
from loffdata.format.sample import (
    FEATURES_SUFFIX,
    Sample,
    decode_sample,
    features_match,
    split_member_name,
)
from loffdata.format.tar import iter_sample_members, iter_sample_spans
from loffdata.storage.cache import ShardCache
from loffdata.storage.prefetch import RemoteReads
from loffdata.storage.remote import _LOCAL_BUFFER, ResumableReader, filesystem, is_local, open_shard
from loffdata.stream import scatter
from loffdata.stream.plan import sample_locations
from loffdata.stream.scatter import SampleLayout, learn_layout, read_samples

if TYPE_CHECKING:
    from loffdata.stream.dataset import StreamingDataset

__all__ = ["ReadArena", "SampleReader", "with_substitutes"]

_MAX_OPEN_SHARDS = 8
_MAX_RANDOM_ACCESS_FILES = 64


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
        #: local shard files can be read at predicted offsets (see :mod:`loffdata.stream.scatter`)
        self.random_access = scatter.AVAILABLE and (ds.cache is not None or all(map(is_local, ds.shards.urls)))
        self.layouts: dict[int, tuple[SampleLayout, int] | None] = {}  # shard -> (layout, first offset)
        self.files: OrderedDict[int, BinaryIO] = OrderedDict()  # open for random access
        #: plan-driven prefetch of remote shards (see :meth:`plan_reads`)
        self.remote = RemoteReads(ds.shards.urls, ds.shards.counts, ds.shards.sizes, retry=ds.retry,
                                  config=ds.prefetch, filesystem=self._filesystem, cache=self.cache)

    def plan_reads(self, indices: np.ndarray, window: int) -> None:
        """Tells storage which samples this reader will read (``window`` at a time), so that
        remote shards are fetched ahead, many requests in flight (:mod:`loffdata.storage.prefetch`)."""
        self.remote.plan(indices, window)

    def each(self, indices: np.ndarray, destinations: dict[int, memoryview] | None = None) -> Iterator[tuple[int, Sample]]:
        """Yields ``(global index, sample)`` for the sorted, unique ``indices`` as they are read.

        ``destinations`` (global index -> writable buffer of the feature data's size) asks
        for samples' feature data to be read straight into those buffers, where possible;
        the yielded features are then views of them. In skip mode, samples that cannot be
        read or decoded are left out (and counted).
        """
        shard_ids, locals_ = sample_locations(self.shards.counts, indices)
        if destinations and self.random_access:
            missed = yield from self._scattered(indices, shard_ids, locals_, destinations)
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

    def _scattered(
        self, indices: np.ndarray, shard_ids: np.ndarray, locals_: np.ndarray, destinations: dict[int, memoryview]
    ) -> Iterator[tuple[int, Sample]]:
        """Reads samples with a known layout at their predicted offsets (random access).

        Yields ``(global index, sample)`` for those read; returns the mask of the others
        (no layout, no destination, or a failed check), which the general reader reads.
        """
        missed = np.ones(len(indices), dtype=bool)
        groups: dict[int, tuple[SampleLayout, list[tuple[int, int, int, memoryview]]]] = {}
        for p, (gid, s, loc) in enumerate(zip(indices.tolist(), shard_ids.tolist(), locals_.tolist())):
            known, dst = self._layout(s), destinations.get(gid)
            if known is None or dst is None or len(dst) != known[0].data[1]:
                continue
            layout, begin = known
            groups.setdefault(id(layout), (layout, []))[1].append((p, s, begin + loc * layout.span, dst))
        try:
            for layout, reads in groups.values():
                found = read_samples(layout, [(self._fd(s), offset, dst) for _, s, offset, dst in reads])
                for (p, s, _, _), got in zip(reads, found):
                    if got is None:
                        continue
                    missed[p] = False
                    sample = self._checked(got[0], got[1], s)
                    if sample is not None:
                        yield int(indices[p]), sample
        finally:
            self._trim_files()  # never during a call: a closed file's descriptor could be reused
        return missed

    def _layout(self, s: int) -> tuple[SampleLayout, int] | None:
        """The layout of shard ``s`` and its first sample's offset, learnt from that sample."""
        if s in self.layouts:
            return self.layouts[s]
        self.layouts[s] = None
        spec = self.shards.features
        if spec.dtype == "int8":
            return None  # the scale follows the data: no straight reads
        nbytes = int(np.prod(spec.shape)) * codec.DTYPES[spec.dtype].itemsize
        row = memoryview(bytearray(nbytes))

        def direct(name: str, size: int) -> memoryview | None:
            return row if name.endswith("." + FEATURES_SUFFIX) and size > nbytes else None

        try:
            file = self._random_access_file(s)
            file.seek(0)
            _, members, span = next(iter_sample_spans(file, shard=self.shards.urls[s], direct=direct))
        except (ShardReadError, StopIteration, OSError):
            return None  # the general reader meets the problem again and reports it
        layout = learn_layout(members, span.end - span.begin, span.first_header)
        if layout is not None:
            self.layouts[s] = (_interned(layout), span.begin)
        return self.layouts[s]

    def _random_access_file(self, s: int) -> BinaryIO:
        file = self.files.get(s)
        if file is None:
            file = self.files[s] = self._open(s)
        self.files.move_to_end(s)
        return file

    def _trim_files(self) -> None:
        """Closes the least recently used shard files beyond the limit."""
        while len(self.files) > _MAX_RANDOM_ACCESS_FILES:
            self.files.popitem(last=False)[1].close()

    def _fd(self, s: int) -> int:
        return self._random_access_file(s).fileno()

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
        return self._checked(key, members, s)

    def _checked(self, key: str, members: dict, s: int) -> Sample | None:
        """The decoded, validated sample; ``None`` (counted) if bad in skip mode."""
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
            return self.remote.open(s) or ResumableReader(url, fs, path, retry=self.ds.retry)
        return self._open_cached(url, fs, path, self.shards.sizes[s], self.remote.opener(s))

    def _open_cached(self, url: str, fs: Any, path: str, size: int | None, prefetched: Any = None) -> BinaryIO:
        def opener() -> BinaryIO:
            return prefetched() if prefetched else ResumableReader(url, fs, path, retry=self.ds.retry)

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
            self.fs[protocol] = filesystem(url, self.ds.storage_options, self.ds.retry)
        fs = self.fs[protocol][0]
        return fs, fs._strip_protocol(url)

    def close(self) -> None:
        self.remote.close()
        for s in list(self.cursors):
            self._drop_cursor(s)
        while self.files:
            self.files.popitem()[1].close()


_LAYOUTS: dict[SampleLayout, SampleLayout] = {}


def _interned(layout: SampleLayout) -> SampleLayout:
    """One object per distinct layout, so that shards sharing it are read in one call."""
    if len(_LAYOUTS) > 256:
        _LAYOUTS.clear()
    return _LAYOUTS.setdefault(layout, layout)


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


