"""Streaming tar parsing: file object -> (member name, bytes) -> grouped sample members.

A small POSIX/ustar reader rather than :mod:`tarfile`: it reads each member with one
``read()``, validates header checksums, and tells a cleanly ended archive (two zero
blocks) from a truncated one, which ``tarfile`` in stream mode does not.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from typing import BinaryIO, NamedTuple

from loffdata.errors import ShardReadError
from loffdata.format.sample import split_member_name

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

_BLOCK = 512
_REGULAR = (b"0", b"\0", b"7")
_SKIPPED = (b"1", b"2", b"3", b"4", b"5", b"6", b"g")
_NUMERIC = (
    ("mode", slice(100, 108)),
    ("uid", slice(108, 116)),
    ("gid", slice(116, 124)),
    ("mtime", slice(136, 148)),
)
_CHUNK = 64 << 20  # a stream of unknown size is read in chunks: a huge declared size costs nothing


def stream_size(f: BinaryIO) -> int | None:
    """The total size of the file behind ``f`` if it can be known cheaply, else ``None``."""
    size = getattr(f, "size", None)
    if isinstance(size, int):
        return size
    try:
        return os.fstat(f.fileno()).st_size
    except (OSError, AttributeError, ValueError):
        pass
    if isinstance(f, io.BytesIO):
        return len(f.getbuffer())
    return None


def _read_exact(f: BinaryIO, n: int) -> bytes:
    data = f.read(min(n, _CHUNK))
    if len(data) == n or not data:
        return data
    parts = [data]
    got = len(data)
    while got < n:
        more = f.read(min(n - got, _CHUNK))
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _read_into(f: BinaryIO, buf: memoryview) -> int:
    got = 0
    while got < len(buf):
        n = f.readinto(buf[got:])
        if not n:
            break
        got += n
    return got


#: ``alloc(nbytes) -> writable memoryview of nbytes, or None`` to let the reader allocate.
Alloc = Callable[[int], "memoryview | None"]
#: ``direct(name, size) -> writable memoryview or None``: the last ``len(view)`` bytes of the
#: member go straight into the view; the member is then yielded as a :class:`SplitPayload`.
Direct = Callable[[str, int], "memoryview | None"]


class SplitPayload:
    """A member read in two parts: ``head`` (bytes) and ``tail`` (a caller-owned view)."""

    __slots__ = ("head", "tail")

    def __init__(self, head: bytes, tail: memoryview):
        self.head, self.tail = head, tail

    def __len__(self) -> int:
        return len(self.head) + len(self.tail)

    def __bytes__(self) -> bytes:
        return self.head + bytes(self.tail)


def _read_split(f: BinaryIO, size: int, padded: int, dst: memoryview) -> tuple[SplitPayload, int]:
    head = _read_exact(f, size - len(dst))
    got = len(head) + (_read_into(f, dst) if len(head) == size - len(dst) else 0)
    pad = _read_exact(f, padded - size) if got == size else b""
    return SplitPayload(head, dst), got + len(pad)


def _read_data(f: BinaryIO, padded: int, alloc: Alloc | None) -> tuple[memoryview | bytes, int]:
    buf = alloc(padded) if alloc is not None and padded >= _BLOCK else None
    if buf is None:
        data = _read_exact(f, padded)
        return data, len(data)
    return buf, _read_into(f, buf)


def _octal(field: bytes, what: str, shard: str, offset: int) -> int:
    """An octal header field (digits, ended by NUL or space), as tar writers emit it.

    Raises:
        ShardReadError: naming ``shard`` and the header's byte ``offset`` for anything else,
            GNU base-256 numbers included (loffdata shards never need them).
    """
    if field[:1] in (b"\x80", b"\xff"):
        raise ShardReadError(
            f"tar header at byte {offset} of shard {shard!r}: {what} is a GNU base-256 number (unsupported)"
        )
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    if not all(48 <= c <= 55 for c in text):
        raise ShardReadError(
            f"corrupt tar header at byte {offset} of shard {shard!r}: {what} {field!r} is not octal"
        )
    return int(text, 8)


def _parse_header(block: bytes, shard: str, offset: int) -> tuple[str, int, bytes]:
    stored = _octal(block[148:156], "checksum", shard, offset)
    actual = sum(block[:148]) + 8 * 32 + sum(block[156:])
    if stored != actual:
        raise ShardReadError(
            f"corrupt tar header at byte {offset} of shard {shard!r} (bad checksum)"
        )
    name = block[0:100].split(b"\0", 1)[0]
    prefix = block[345:500].split(b"\0", 1)[0] if block[257:262] == b"ustar" else b""
    if prefix:
        name = prefix + b"/" + name
    for what, field in _NUMERIC:  # docs/format.md: every numeric field is octal
        _octal(block[field], what, shard, offset)
    return (
        name.decode("utf-8", "replace"),
        _octal(block[124:136], "size", shard, offset),
        block[156:157],
    )


def _pax_path(data: bytes) -> str | None:
    for record in data.split(b"\n"):
        _, _, kv = record.partition(b" ")
        if kv.startswith(b"path="):
            return kv[5:].decode("utf-8", "replace")
    return None


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
    offset, long_name, begin, total = start, None, None, stream_size(f)
    while stop is None or offset < stop:
        block = _read_exact(f, _BLOCK)
        if len(block) < _BLOCK:
            raise ShardReadError(
                f"truncated shard {shard!r}: archive ends at byte {offset} without an end marker"
            )
        if block == bytes(_BLOCK):
            if stop is not None:
                raise ShardReadError(
                    f"shard {shard!r}: the archive ends at byte {offset}, before byte {stop}"
                )
            return
        name, size, kind = _parse_header(block, shard, offset)
        padded = (size + _BLOCK - 1) // _BLOCK * _BLOCK
        if total is not None and offset + _BLOCK + padded > total:
            raise ShardReadError(
                f"truncated shard {shard!r}: member {name!r} at byte {offset} declares {size} bytes, "
                f"the file has {total}"
            )
        data = _member_data(f, name, size, padded, kind, alloc, direct)
        if data is None:
            raise ShardReadError(
                f"truncated shard {shard!r}: member {name!r} at byte {offset} is cut short"
            )
        begin = offset if begin is None else begin
        offset += _BLOCK + padded
        if kind in (b"L", b"x"):
            data = bytes(data)
            long_name = (
                data.rstrip(b"\0").decode("utf-8", "replace") if kind == b"L" else _pax_path(data)
            )
        elif kind in _REGULAR:
            yield (long_name or name), data, begin, offset, block
            long_name, begin = None, None
        elif kind in _SKIPPED:
            long_name, begin = None, None  # a long name belongs to the member right after it
        else:
            raise ShardReadError(
                f"unsupported tar member type {kind!r} for {name!r} at byte {offset} of shard {shard!r}"
            )
    if offset != stop:
        raise ShardReadError(
            f"shard {shard!r}: a member crosses byte {stop}, where its index says a sample starts"
        )


def _member_data(
    f: BinaryIO,
    name: str,
    size: int,
    padded: int,
    kind: bytes,
    alloc: Alloc | None,
    direct: Direct | None,
) -> bytes | memoryview | SplitPayload | None:
    """A member's data (``size`` bytes of ``padded``), or ``None`` if the stream ends first."""
    dst = direct(name, size) if direct is not None and kind in _REGULAR else None
    if dst is not None and 0 < len(dst) <= size:
        data, got = _read_split(f, size, padded, dst)
    else:
        data, got = _read_data(f, padded, alloc)
    if got < padded:
        return None
    return data[:size] if padded != size and not isinstance(data, SplitPayload) else data


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
    key, members, first = None, {}, b""
    for name, data, begin, _, block in _members_at(
        f, shard=shard, alloc=alloc, direct=direct, start=start, stop=stop
    ):
        k, suffix = split_member_name(name)
        if key is None:
            key, first = k, block
        elif k != key:
            raise ShardReadError(
                f"shard {shard!r}: member {name!r} at byte {begin} is not part of sample {key!r}, "
                f"which its index places at bytes {start}-{stop}"
            )
        elif suffix in members:
            raise _duplicate(shard, k, name, begin)
        members[suffix] = data
    if key is None:
        raise ShardReadError(
            f"shard {shard!r}: no sample at bytes {start}-{stop}, where its index places one"
        )
    if _next_key(f, shard, stop) == key:
        raise ShardReadError(
            f"shard {shard!r}: sample {key!r} goes on past byte {stop}, where its index ends it"
        )
    return key, members, first


def _next_key(f: BinaryIO, shard: str, offset: int) -> str | None:
    """The key of the member whose headers start at ``offset`` (where ``f`` is), or ``None``
    at the end of the archive or where no valid header is (the next read reports that)."""
    block = _read_exact(f, _BLOCK)
    long_name = None
    if len(block) == _BLOCK and block[156:157] in (b"L", b"x"):
        try:
            _, size, kind = _parse_header(block, shard, offset)
        except ShardReadError:
            return None
        data = (
            _read_exact(f, (size + _BLOCK - 1) // _BLOCK * _BLOCK)[:size]
            if size <= 1 << 20
            else b""
        )
        long_name = (
            data.rstrip(b"\0").decode("utf-8", "replace") if kind == b"L" else _pax_path(data)
        )
        block = _read_exact(f, _BLOCK)
    if len(block) < _BLOCK or block == bytes(_BLOCK):
        return None
    try:
        name, _, kind = _parse_header(block, shard, offset)
    except ShardReadError:
        return None
    return split_member_name(long_name or name)[0] if kind in _REGULAR else None


def key_at(f: BinaryIO, *, shard: str, offset: int) -> str | None:
    """The key of the sample member whose headers start at byte ``offset`` (where ``f`` is),
    or ``None`` at the end of the archive or where no regular member starts."""
    return _next_key(f, shard, offset)
