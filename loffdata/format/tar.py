"""Streaming tar parsing: file object -> (member name, bytes) -> grouped sample members.

A small POSIX/ustar reader rather than :mod:`tarfile`: it reads each member with one
``read()``, validates header checksums, and tells a cleanly ended archive (two zero
blocks) from a truncated one, which ``tarfile`` in stream mode does not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import BinaryIO, NamedTuple

from loffdata.errors import ShardReadError
from loffdata.format.sample import split_member_name

__all__ = ["SplitPayload", "SampleSpan", "iter_members", "iter_sample_members", "iter_sample_spans"]

_BLOCK = 512
_REGULAR = (b"0", b"\0", b"7")
_SKIPPED = (b"1", b"2", b"3", b"4", b"5", b"6", b"g")


def _read_exact(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) == n or not data:
        return data
    parts = [data]
    got = len(data)
    while got < n:
        more = f.read(n - got)
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


def _octal(field: bytes) -> int:
    text = field.rstrip(b"\0 ").lstrip(b" ")
    return int(text, 8) if text else 0


def _parse_header(block: bytes, shard: str, offset: int) -> tuple[str, int, bytes]:
    stored = _octal(block[148:156])
    actual = sum(block[:148]) + 8 * 32 + sum(block[156:])
    if stored != actual:
        raise ShardReadError(f"corrupt tar header at byte {offset} of shard {shard!r} (bad checksum)")
    name = block[0:100].split(b"\0", 1)[0]
    prefix = block[345:500].split(b"\0", 1)[0] if block[257:262] == b"ustar" else b""
    if prefix:
        name = prefix + b"/" + name
    return name.decode("utf-8", "replace"), _octal(block[124:136]), block[156:157]


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
    f: BinaryIO, *, shard: str, alloc: Alloc | None, direct: Direct | None, start: int
) -> Iterator[tuple[str, bytes | memoryview | SplitPayload, int, int, bytes]]:
    """:func:`iter_members` from byte ``start`` (where ``f`` is positioned), also yielding
    each member's first header offset (long-name headers included), end offset and header."""
    offset, long_name, begin = start, None, None
    while True:
        block = _read_exact(f, _BLOCK)
        if len(block) < _BLOCK:
            raise ShardReadError(f"truncated shard {shard!r}: archive ends at byte {offset} without an end marker")
        if block == bytes(_BLOCK):
            return
        name, size, kind = _parse_header(block, shard, offset)
        padded = (size + _BLOCK - 1) // _BLOCK * _BLOCK
        dst = direct(name, size) if direct is not None and kind in _REGULAR else None
        if dst is not None and 0 < len(dst) <= size:
            data, got = _read_split(f, size, padded, dst)
        else:
            data, got = _read_data(f, padded, alloc)
        if got < padded:
            raise ShardReadError(f"truncated shard {shard!r}: member {name!r} at byte {offset} is cut short")
        begin = offset if begin is None else begin
        offset += _BLOCK + padded
        data = data[:size] if padded != size and not isinstance(data, SplitPayload) else data
        if kind in (b"L", b"x"):
            data = bytes(data)
            long_name = data.rstrip(b"\0").decode("utf-8", "replace") if kind == b"L" else _pax_path(data)
        elif kind in _REGULAR:
            yield (long_name or name), data, begin, offset, block
            long_name, begin = None, None
        elif kind not in _SKIPPED:
            raise ShardReadError(f"unsupported tar member type {kind!r} for {name!r} in shard {shard!r}")
        else:
            begin = None


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
    f: BinaryIO, *, shard: str, alloc: Alloc | None = None, direct: Direct | None = None, start: int = 0
) -> Iterator[tuple[str, dict[str, bytes], SampleSpan]]:
    """:func:`iter_sample_members` from byte ``start`` (where ``f`` is positioned), with each
    sample's :class:`SampleSpan` (what :mod:`loffdata.stream.scatter` learns layouts from)."""
    key, members, span = None, {}, None
    for name, data, begin, end, block in _members_at(f, shard=shard, alloc=alloc, direct=direct, start=start):
        k, suffix = split_member_name(name)
        if k != key and members:
            yield key, members, span
            members = {}
        if k != key or span is None:
            span = SampleSpan(begin, end, block)
        key = k
        members[suffix] = data
        span = span._replace(end=end)
    if members:
        yield key, members, span
