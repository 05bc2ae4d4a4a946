"""Random access into tar shards through their index, one ``preadv`` per local sample.

A shard's index (``offsets`` and ``keys`` in the manifest, see ``docs/format.md``) says
where each sample starts and ends and what its key is. :class:`IndexedShards` reads sample
``i`` from exactly those bytes and delivers it only if it is sample ``i``: every member in
them is named ``key_i.<suffix>``, and the header after them does not continue that key. A
prediction that is wrong can only fall back or fail, never deliver a neighbour.

The samples of a shard nearly always share one layout: the same members in the same order,
with the same padded sizes. Once one sample has been read the general way
(:func:`~loffdata.format.tar.read_sample_at`), its :class:`SampleLayout` lets every sample
of the same span be read with a single ``os.preadv`` that puts its feature data straight
into its batch row and the rest (headers, payload head, small members, and the header
after it) into a scratch buffer. Every header is then checked (checksum, exact name from
the index, size, type, fixed fields) with numpy over all samples of a call, and every
payload head must equal the layout's byte for byte. A sample whose span differs, or that
fails any check, is read by the general reader, which reports real problems with its usual
errors.
"""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import numpy as np

from loffdata.errors import ShardReadError
from loffdata.format.sample import FEATURES_SUFFIX
from loffdata.format.shardindex import check_coverage
from loffdata.format.tar import SplitPayload, read_sample_at
from loffdata.stream.layout import SampleLayout, check_samples, learn_layout, named

__all__ = ["SampleLayout", "IndexedShards", "learn_layout", "read_samples", "AVAILABLE"]

#: ``os.preadv`` exists on Linux and the BSDs; elsewhere the general reader is used.
AVAILABLE = hasattr(os, "preadv")

_BLOCK = 512


def read_samples(
    layout: SampleLayout, reads: list[tuple[int, int, memoryview]], *, keys: list[str]
) -> list[tuple[str, dict] | None]:
    """Reads samples of one layout at indexed offsets, each with one ``preadv``.

    ``reads`` holds ``(fd, offset, row)`` per sample: the file, the byte offset where the
    index says the sample starts, and the row its feature data goes into (``layout.data[1]``
    bytes); ``keys`` the key the index gives each. Returns, per sample, ``(key, {suffix:
    data})`` (features as a :class:`~loffdata.format.tar.SplitPayload` over the row, other
    members as memoryviews of a scratch buffer), or ``None`` where the bytes found do not
    match the layout and key: a short read, a bad header, another name, another head, or a
    header after the sample that continues its key (the general reader then reads that one
    and reports any real problem).
    """
    n, per = len(reads), layout.scratch + _BLOCK  # a sample's scratch, then the next header
    scratch = bytearray(n * per)
    complete = _preadv_all(layout, reads, memoryview(scratch), per)
    arr = np.frombuffer(scratch, dtype=np.uint8).reshape(n, per)
    ok, sizes = check_samples(arr, layout)
    ok &= complete & named(arr, layout, keys)
    return _delivered(layout, reads, keys, memoryview(scratch), ok, sizes)


def _preadv_all(
    layout: SampleLayout, reads: list[tuple[int, int, memoryview]], view: memoryview, per: int
) -> np.ndarray:
    """One ``preadv`` per sample into its row and its ``per`` bytes of ``view``; returns
    which samples were read whole."""
    pre, want = layout.data[0], layout.span + _BLOCK
    complete = np.zeros(len(reads), dtype=bool)
    for j, (fd, offset, row) in enumerate(reads):
        if len(row) != layout.data[1]:
            raise ValueError(
                f"row {j} has {len(row)} bytes, the layout's data has {layout.data[1]}"
            )
        base = j * per
        with contextlib.suppress(OSError):  # the general reader meets it again and reports it
            complete[j] = (
                os.preadv(fd, (view[base : base + pre], row, view[base + pre : base + per]), offset)
                == want
            )
    return complete


def _delivered(
    layout: SampleLayout,
    reads: list[tuple[int, int, memoryview]],
    keys: list[str],
    view: memoryview,
    ok: np.ndarray,
    sizes: np.ndarray,
) -> list[tuple[str, dict] | None]:
    """:func:`read_samples`' result: the samples where ``ok``, ``None`` elsewhere."""
    per = layout.scratch + _BLOCK
    out: list[tuple[str, dict] | None] = [None] * len(reads)
    small = [
        (m, suffix, layout.scratch_offset(h) + _BLOCK)
        for m, (suffix, h) in enumerate(zip(layout.suffixes, layout.headers))
        if suffix != FEATURES_SUFFIX
    ]
    for j in np.flatnonzero(ok).tolist():
        members = {}
        for m, suffix, at in small:
            members[suffix] = view[j * per + at : j * per + at + int(sizes[j, m])]
        members[FEATURES_SUFFIX] = SplitPayload(layout.head, reads[j][2])
        out[j] = (keys[j], {k: members[k] for k in layout.suffixes})
    return out


_LEARN_TRIES = 3  # samples read the general way before a shard is taken to have no layout
_MAX_FILES = 64
_LAYOUTS: dict[SampleLayout, SampleLayout] = {}


def _interned(layout: SampleLayout) -> SampleLayout:
    """One object per distinct layout, so that shards sharing it are read in one call."""
    if len(_LAYOUTS) > 256:
        _LAYOUTS.clear()
    return _LAYOUTS.setdefault(layout, layout)


class IndexedShards:
    """Random access into indexed shards, for one process.

    Args:
        urls: the shards' URLs (for errors).
        offsets: per shard, the index offsets (``samples + 1``).
        keys: per shard, the index keys.
        open_file: opens shard ``s`` as a binary file.
        scatter: the files are local (with a file descriptor): samples of a known layout
            are read with one ``preadv`` each; else every sample is read by the general
            reader from its indexed bytes (remote shards, whose bytes are fetched ahead).
    """

    def __init__(
        self,
        urls: list[str],
        offsets: list[np.ndarray],
        keys: list[tuple[str, ...]],
        open_file: Callable[[int], BinaryIO],
        *,
        scatter: bool = True,
        indexes: Any = None,
    ):
        self.urls, self.offsets, self.keys, self._open = urls, offsets, keys, open_file
        self.indexes = indexes
        self.scatter = scatter and AVAILABLE
        self.files: OrderedDict[int, BinaryIO] = OrderedDict()
        self.layouts: dict[int, SampleLayout | None] = {}
        self.tries: dict[int, int] = {}

    def read(
        self, wants: list[tuple[int, int, memoryview]]
    ) -> Iterator[tuple[int, tuple[str, dict] | ShardReadError]]:
        """Reads ``(shard, sample number, row)`` wants; yields ``(position in wants, (key,
        {suffix: data}) or the ShardReadError)``, in any order. Feature data goes straight
        into the rows where it can (the features are then a view of the row)."""
        groups: dict[int, tuple[SampleLayout, list[int]]] = {}
        try:
            for p, (s, loc, row) in enumerate(wants):
                layout = self.layouts.get(s) if self.scatter else None
                o = self.offsets[s]
                if (
                    layout is not None
                    and o[loc + 1] - o[loc] == layout.span
                    and len(row) == layout.data[1]
                ):
                    groups.setdefault(id(layout), (layout, []))[1].append(p)
                else:
                    yield p, self._general(s, loc, row)
            for layout, ps in groups.values():
                yield from self._scatter(layout, ps, wants)
        finally:
            self._trim()  # never during a call: a closed file's descriptor could be reused

    def _scatter(
        self, layout: SampleLayout, ps: list[int], wants: list
    ) -> Iterator[tuple[int, tuple | ShardReadError]]:
        try:
            reads = [
                (self._file(s).fileno(), int(self.offsets[s][loc]), row)
                for s, loc, row in (wants[p] for p in ps)
            ]
        except ShardReadError:
            reads = None
        keys = [self.keys[s][loc] for s, loc, _ in (wants[p] for p in ps)]
        found = read_samples(layout, reads, keys=keys) if reads is not None else [None] * len(ps)
        for p, got in zip(ps, found):
            yield p, got if got is not None else self._general(*wants[p])

    def _general(
        self, s: int, loc: int, row: memoryview | None
    ) -> tuple[str, dict] | ShardReadError:
        """Sample ``loc`` of shard ``s`` read by the tar reader from its indexed bytes (and
        the shard's layout learnt from it), or the error that says why it cannot be."""
        url, start, stop = self.urls[s], int(self.offsets[s][loc]), int(self.offsets[s][loc + 1])

        def direct(name: str, size: int) -> memoryview | None:
            return (
                row
                if row is not None and name.endswith("." + FEATURES_SUFFIX) and size > len(row)
                else None
            )

        try:
            f = self._file(s)
            f.seek(start)
            key, members, first = read_sample_at(
                f, shard=url, start=start, stop=stop, direct=direct
            )
        except ShardReadError as err:
            return err
        except OSError as err:
            return ShardReadError(f"cannot read shard {url!r} at byte {start}: {err}")
        if key != self.keys[s][loc]:
            return ShardReadError(
                f"shard {url!r}: the sample at byte {start} is {key!r}, "
                f"its index says {self.keys[s][loc]!r}"
            )
        self._learn(s, members, stop - start, first)
        return key, members

    def _learn(self, s: int, members: dict, span: int, first: bytes) -> None:
        if not self.scatter or s in self.layouts or self.tries.get(s, 0) >= _LEARN_TRIES:
            return
        self.tries[s] = self.tries.get(s, 0) + 1
        layout = learn_layout(members, span, first)
        if layout is not None:
            self.layouts[s] = _interned(layout)

    def usable(self, s: int) -> bool:
        """Whether shard ``s`` has a usable index (a sidecar may be missing or refused)."""
        return (
            self.indexes is None
            or not hasattr(self.indexes, "get")
            or self.indexes.get(s) is not None
        )

    def _file(self, s: int) -> BinaryIO:
        file = self.files.get(s)
        if file is None:
            file = self._open(s)
            if self.scatter:  # local: the index must cover the shard exactly (one read per shard)
                self._check_coverage(s, file)
            self.files[s] = file
        self.files.move_to_end(s)
        return file

    def _check_coverage(self, s: int, file: BinaryIO) -> None:
        try:
            check_coverage(file, self.offsets[s], shard=self.urls[s])
        except BaseException:
            file.close()
            raise

    def _trim(self) -> None:
        """Closes the least recently used shard files beyond the limit."""
        while len(self.files) > _MAX_FILES:
            self.files.popitem(last=False)[1].close()

    def close(self) -> None:
        while self.files:
            self.files.popitem()[1].close()
