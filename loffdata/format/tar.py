"""Streaming tar parsing: file object -> (member name, bytes) -> grouped sample members.

A small POSIX/ustar reader rather than :mod:`tarfile`: it reads each member with one
``read()``, validates header checksums, and tells a cleanly ended archive (two zero
blocks) from a truncated one, which ``tarfile`` in stream mode does not.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO, NamedTuple

from loffdata.errors import ShardReadError
from loffdata.format.sample import split_member_name
from loffdata.format.tarblock import (
    BLOCK,
    REGULAR,
    SKIPPED,
    Alloc,
    Direct,
    SplitPayload,
    long_name,
    member_data,
    parse_header,
    read_exact,
    stream_size,
)

__all__ = [
    "SplitPayload",
    "SampleSpan",
    "iter_members",
    "iter_sample_members",
    "iter_sample_spans",
    "key_at",
    "read_sample_at",
    "stream_size",
]


def iter_members(
    f: BinaryIO, *, shard: str, alloc: Alloc | None = None, direct: Direct | None = None
) -> Iterator[tuple[str, bytes | memoryview | SplitPayload]]:
    """Yields ``(name, data)`` of each regular file member of a tar stream.

    Args:
        f: a readable binary stream positioned at the start of the archive.
        shard: the shard's URL, for error messages.
        alloc: optional allocator of member buffers: ``alloc(nbytes)`` returns a writable
            memoryview to read a member into (``data`` is then a view of it), or ``None``.
            Reusing buffers avoids a fresh allocation, and its page faults, per member.
        direct: optional hook that lets the caller receive a member's last bytes (a tensor
            payload's data) in its own buffer, e.g. a row of a batch: no copy at all.

    Raises:
        ShardReadError: naming ``shard`` if the stream is truncated or a header is corrupt.
    """
    for name, data, _, _, _ in _members_at(f, shard=shard, alloc=alloc, direct=direct, start=0):
        yield name, data


def _members_at(
    f: BinaryIO,
    *,
    shard: str,
    alloc: Alloc | None,
    direct: Direct | None,
    start: int,
    stop: int | None = None,
) -> Iterator[tuple[str, bytes | memoryview | SplitPayload, int, int, bytes]]:
    """:func:`iter_members` from byte ``start`` (where ``f`` is positioned) up to the end
    marker or byte ``stop``, also yielding each member's first header offset (long-name
    headers included), end offset and header. A declared size beyond the file's end is
    refused before anything is allocated."""
    offset, named, begin, total = start, None, None, stream_size(f)
    while stop is None or offset < stop:
        block = _header_block(f, shard, offset, stop)
        if block is None:
            return
        name, data, kind, end = _read_member(f, shard, offset, total, block, alloc, direct)
        begin, offset = (offset if begin is None else begin), end
        if kind in (b"L", b"x"):
            named = long_name(kind, bytes(data))
        elif kind in REGULAR:
            yield (named or name), data, begin, offset, block
            named, begin = None, None
        elif kind in SKIPPED:
            named, begin = None, None  # a long name belongs to the member right after it
        else:
            raise ShardReadError(
                f"unsupported tar member type {kind!r} for {name!r} at byte {offset} "
                f"of shard {shard!r}"
            )
    if offset != stop:
        raise ShardReadError(
            f"shard {shard!r}: a member crosses byte {stop}, where its index says a sample starts"
        )


def _header_block(f: BinaryIO, shard: str, offset: int, stop: int | None) -> bytes | None:
    """The header block at byte ``offset``, or ``None`` at a clean end marker.

    Raises:
        ShardReadError: if the archive is cut short, or ends before ``stop``.
    """
    block = read_exact(f, BLOCK)
    if len(block) < BLOCK:
        raise ShardReadError(
            f"truncated shard {shard!r}: archive ends at byte {offset} without an end marker"
        )
    if block != bytes(BLOCK):
        return block
    if stop is not None:
        raise ShardReadError(
            f"shard {shard!r}: the archive ends at byte {offset}, before byte {stop}"
        )
    return None


def _read_member(
    f: BinaryIO,
    shard: str,
    offset: int,
    total: int | None,
    block: bytes,
    alloc: Alloc | None,
    direct: Direct | None,
) -> tuple[str, bytes | memoryview | SplitPayload, bytes, int]:
    """``(name, data, type flag, end offset)`` of the member whose header ``block`` is at
    byte ``offset``; a size past the file's ``total`` is refused before any allocation."""
    name, size, kind = parse_header(block, shard, offset)
    padded = (size + BLOCK - 1) // BLOCK * BLOCK
    if total is not None and offset + BLOCK + padded > total:
        raise ShardReadError(
            f"truncated shard {shard!r}: member {name!r} at byte {offset} declares {size} "
            f"bytes, the file has {total}"
        )
    data = member_data(f, name, size, padded, kind, alloc, direct)
    if data is None:
        raise ShardReadError(
            f"truncated shard {shard!r}: member {name!r} at byte {offset} is cut short"
        )
    return name, data, kind, offset + BLOCK + padded


def iter_sample_members(
    f: BinaryIO, *, shard: str, alloc: Alloc | None = None, direct: Direct | None = None
) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Groups consecutive members by key; yields ``(key, {suffix: bytes})`` per sample.

    ``alloc`` and ``direct`` are passed to :func:`iter_members`.
    """
    for key, members, _ in iter_sample_spans(f, shard=shard, alloc=alloc, direct=direct):
        yield key, members


class SampleSpan(NamedTuple):
    """Where a sample lay in its shard: byte offsets and its first member's header block."""

    begin: int
    end: int
    first_header: bytes


def iter_sample_spans(
    f: BinaryIO,
    *,
    shard: str,
    alloc: Alloc | None = None,
    direct: Direct | None = None,
    start: int = 0,
) -> Iterator[tuple[str, dict[str, bytes], SampleSpan]]:
    """:func:`iter_sample_members` from byte ``start`` (where ``f`` is positioned), with each
    sample's :class:`SampleSpan` (what :mod:`loffdata.format.index` records).

    Raises:
        ShardReadError: also when a member repeats within a run of one key: two consecutive
            samples with the same key, which the format does not allow (they cannot be told
            apart).
    """
    key, members, span = None, {}, None
    for name, data, begin, end, block in _members_at(
        f, shard=shard, alloc=alloc, direct=direct, start=start
    ):
        k, suffix = split_member_name(name)
        if k != key and members:
            yield key, members, span
            members = {}
        if k != key or span is None:
            span = SampleSpan(begin, end, block)
        elif suffix in members:
            raise _duplicate(shard, k, name, begin)
        key = k
        members[suffix] = data
        span = span._replace(end=end)
    if members:
        yield key, members, span


def _duplicate(shard: str, key: str, name: str, offset: int) -> ShardReadError:
    return ShardReadError(
        f"duplicate sample key {key!r} in shard {shard!r}: member {name!r} at byte {offset} "
        "repeats within consecutive members of one key"
    )


def read_sample_at(
    f: BinaryIO,
    *,
    shard: str,
    start: int,
    stop: int,
    alloc: Alloc | None = None,
    direct: Direct | None = None,
) -> tuple[str, dict[str, bytes], bytes]:
    """Reads the one sample that occupies bytes ``[start, stop)`` (``f`` positioned at ``start``).

    Returns ``(key, {suffix: data}, first header block)``.

    Raises:
        ShardReadError: naming ``shard`` and the byte offset if those bytes are not exactly
            one sample: no member, members of several keys, a repeated member, or a member
            that crosses ``stop``; and for every error of :func:`iter_members`.
    """
    members_at = _members_at(f, shard=shard, alloc=alloc, direct=direct, start=start, stop=stop)
    key, members, first = _one_sample(members_at, shard, start, stop)
    if _next_key(f, shard, stop) == key:
        raise ShardReadError(
            f"shard {shard!r}: sample {key!r} goes on past byte {stop}, where its index ends it"
        )
    return key, members, first


def _one_sample(
    members_at: Iterator[tuple[str, bytes | memoryview | SplitPayload, int, int, bytes]],
    shard: str,
    start: int,
    stop: int,
) -> tuple[str, dict[str, bytes], bytes]:
    """The members of :func:`read_sample_at`'s bytes gathered into one sample."""
    key, members, first = None, {}, b""
    for name, data, begin, _, block in members_at:
        k, suffix = split_member_name(name)
        if key is None:
            key, first = k, block
        elif k != key:
            raise ShardReadError(
                f"shard {shard!r}: member {name!r} at byte {begin} is not part of sample "
                f"{key!r}, which its index places at bytes {start}-{stop}"
            )
        elif suffix in members:
            raise _duplicate(shard, k, name, begin)
        members[suffix] = data
    if key is None:
        raise ShardReadError(
            f"shard {shard!r}: no sample at bytes {start}-{stop}, where its index places one"
        )
    return key, members, first


def _next_key(f: BinaryIO, shard: str, offset: int) -> str | None:
    """The key of the member whose headers start at ``offset`` (where ``f`` is), or ``None``
    at the end of the archive or where no valid header is (the next read reports that)."""
    block = read_exact(f, BLOCK)
    named = None
    if len(block) == BLOCK and block[156:157] in (b"L", b"x"):
        try:
            _, size, kind = parse_header(block, shard, offset)
        except ShardReadError:
            return None
        data = read_exact(f, (size + BLOCK - 1) // BLOCK * BLOCK)[:size] if size <= 1 << 20 else b""
        named = long_name(kind, data)
        block = read_exact(f, BLOCK)
    if len(block) < BLOCK or block == bytes(BLOCK):
        return None
    try:
        name, _, kind = parse_header(block, shard, offset)
    except ShardReadError:
        return None
    return split_member_name(named or name)[0] if kind in REGULAR else None


def key_at(f: BinaryIO, *, shard: str, offset: int) -> str | None:
    """The key of the sample member whose headers start at byte ``offset`` (where ``f`` is),
    or ``None`` at the end of the archive or where no regular member starts."""
    return _next_key(f, shard, offset)
