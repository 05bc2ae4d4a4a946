"""A shard read in sequence: the samples asked for, in increasing order, members read into
reused buffers (:class:`ReadArena`) or straight into batch rows (``destinations``)."""

from __future__ import annotations

from typing import BinaryIO

from loffdata.errors import ShardReadError
from loffdata.format.sample import FEATURES_SUFFIX, split_member_name
from loffdata.format.tar import iter_sample_members

__all__ = ["ReadArena", "ShardCursor"]


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


class ShardCursor:
    """A shard read sequentially; hands out the samples asked for, in increasing order."""

    def __init__(
        self,
        url: str,
        file: BinaryIO,
        count: int,
        *,
        reuse_buffers: bool = False,
        keys: tuple[str, ...] | None = None,
    ):
        self.url, self.file, self.count, self.keys = url, file, count, keys
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
            if self.keys is not None and self.pos < len(self.keys) and key != self.keys[self.pos]:
                raise ShardReadError(
                    f"shard {self.url!r}: sample {self.pos} is {key!r}, "
                    f"the shard's index says {self.keys[self.pos]!r}"
                )
            self.pos += 1
            if self.pos > local:
                return key, members

    def close(self) -> None:
        self.file.close()
