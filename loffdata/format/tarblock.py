"""One tar member at a time: header blocks parsed and validated, member data read.

The low level of :mod:`loffdata.format.tar`: a 512-byte ustar header's checksum and octal
fields, GNU long names and pax paths, and a member's data read with one ``read()``, into a
caller's buffer (``alloc``) or split so its tail lands in a caller's view (``direct``).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from typing import BinaryIO

from loffdata.errors import ShardReadError

__all__ = [
    "BLOCK",
    "REGULAR",
    "SKIPPED",
    "Alloc",
    "Direct",
    "SplitPayload",
    "long_name",
    "member_data",
    "parse_header",
    "pax_path",
    "read_exact",
    "stream_size",
]

BLOCK = 512
REGULAR = (b"0", b"\0", b"7")
SKIPPED = (b"1", b"2", b"3", b"4", b"5", b"6", b"g")
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


def read_exact(f: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes of ``f`` (fewer only at its end), read in chunks of at most 64 MiB."""
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
    head = read_exact(f, size - len(dst))
    got = len(head) + (_read_into(f, dst) if len(head) == size - len(dst) else 0)
    pad = read_exact(f, padded - size) if got == size else b""
    return SplitPayload(head, dst), got + len(pad)


def _read_data(f: BinaryIO, padded: int, alloc: Alloc | None) -> tuple[memoryview | bytes, int]:
    buf = alloc(padded) if alloc is not None and padded >= BLOCK else None
    if buf is None:
        data = read_exact(f, padded)
        return data, len(data)
    return buf, _read_into(f, buf)


_OCTAL_DIGITS = b"01234567"


def _octal(field: bytes, what: str, shard: str, offset: int) -> int:
    """An octal header field (digits, ended by NUL or space), as tar writers emit it.

    Raises:
        ShardReadError: naming ``shard`` and the header's byte ``offset`` for anything else,
            GNU base-256 numbers included (loffdata shards never need them).
    """
    if field[:1] in (b"\x80", b"\xff"):
        raise ShardReadError(
            f"tar header at byte {offset} of shard {shard!r}: {what} is a GNU base-256 number "
            "(unsupported)"
        )
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    if text.translate(None, _OCTAL_DIGITS):  # anything left is not an octal digit
        raise ShardReadError(
            f"corrupt tar header at byte {offset} of shard {shard!r}: {what} {field!r} is not octal"
        )
    return int(text, 8)


def parse_header(block: bytes, shard: str, offset: int) -> tuple[str, int, bytes]:
    """``(name, size, type flag)`` of the header ``block`` at byte ``offset`` of ``shard``.

    Raises:
        ShardReadError: on a bad checksum or a numeric field that is not octal.
    """
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


def pax_path(data: bytes) -> str | None:
    """The ``path`` record of a pax extended header's ``data``, or ``None``."""
    for record in data.split(b"\n"):
        _, _, kv = record.partition(b" ")
        if kv.startswith(b"path="):
            return kv[5:].decode("utf-8", "replace")
    return None


def member_data(
    f: BinaryIO,
    name: str,
    size: int,
    padded: int,
    kind: bytes,
    alloc: Alloc | None,
    direct: Direct | None,
) -> bytes | memoryview | SplitPayload | None:
    """A member's data (``size`` bytes of ``padded``), or ``None`` if the stream ends first."""
    dst = direct(name, size) if direct is not None and kind in REGULAR else None
    if dst is not None and 0 < len(dst) <= size:
        data, got = _read_split(f, size, padded, dst)
    else:
        data, got = _read_data(f, padded, alloc)
    if got < padded:
        return None
    return data[:size] if padded != size and not isinstance(data, SplitPayload) else data


def long_name(kind: bytes, data: bytes) -> str | None:
    """The name a GNU long-name (``L``) or pax (``x``) member's ``data`` gives the next one."""
    return data.rstrip(b"\0").decode("utf-8", "replace") if kind == b"L" else pax_path(data)
