"""A shard's index in compact binary form: the sidecar file ``shard-000001.idx``.

The index of a shard is where each sample starts (``samples + 1`` byte offsets: the last is
where the last sample ends) and each sample's key. :class:`ShardIndex` holds it as two
``uint64`` arrays and one UTF-8 key blob (about 16 bytes a sample plus the keys), whether
it came from a sidecar (memory-mapped locally, fetched whole remotely) or from an old
manifest's inline lists. The byte layout, for readers in any language, is in
``docs/format.md#index-sidecars``; every field is little-endian:

====== ============ =====================================================================
offset size         field
====== ============ =====================================================================
0      8            magic ``LOFFIDX1``
8      8            ``n``: samples (uint64)
16     8            the shard's size in bytes (uint64)
24     32           the shard's sha256 (raw bytes; zeros if the manifest's is not hex)
56     8            ``k``: bytes of the key blob (uint64)
64     8 (n + 1)    offsets (uint64)
...    8 (n + 1)    key starts (uint64): key ``i`` is ``blob[starts[i]:starts[i + 1]]``
...    k            the key blob (UTF-8)
...    32           sha256 of all bytes before it
====== ============ =====================================================================
"""

from __future__ import annotations

import hashlib
import mmap
import posixpath
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO

import numpy as np

from loffdata.errors import ManifestError, ShardReadError
from loffdata.safeio import fetch_remote

__all__ = ["INDEX_MAGIC", "ShardIndex", "Keys", "index_name", "read_index", "check_coverage"]

INDEX_MAGIC = b"LOFFIDX1"
_HEADER = 64
_DIGEST = 32
_U64 = np.dtype("<u8")
#: Fewest bytes a sample can take in a tar, and the end-of-archive marker after the last.
MIN_SAMPLE_BYTES = 1024
END_MARKER = 1024


def index_name(shard_name: str) -> str:
    """The sidecar's name for a shard name: ``sub/shard-000001.tar`` -> ``sub/shard-000001.idx``."""
    stem, ext = posixpath.splitext(shard_name)
    return (stem if ext == ".tar" else shard_name) + ".idx"


class Keys(Sequence):
    """The keys of a shard's samples, decoded from the key blob on access."""

    __slots__ = ("_blob", "_starts")

    def __init__(self, blob: Any, starts: np.ndarray):
        self._blob, self._starts = blob, starts

    def __len__(self) -> int:
        return len(self._starts) - 1

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return tuple(self[j] for j in range(*i.indices(len(self))))
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"key {i} of {n}")
        i %= n
        return bytes(self._blob[int(self._starts[i]) : int(self._starts[i + 1])]).decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and tuple(self) == tuple(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Keys({len(self)} keys)"


class ShardIndex:
    """One shard's offsets (``uint64``, ``samples + 1``) and keys, held compactly.

    Args:
        offsets: the byte offsets.
        starts: where each key starts in ``blob`` (``samples + 1`` values).
        blob: the keys, UTF-8, back to back (bytes, a memory map or an array view).
    """

    __slots__ = ("offsets", "keys", "_hold")

    def __init__(self, offsets: np.ndarray, starts: np.ndarray, blob: Any, hold: Any = None):
        self.offsets = offsets
        self.keys = Keys(blob, starts)
        self._hold = hold  # a memory map the views point into

    @classmethod
    def from_lists(
        cls, offsets: Sequence[int], keys: Sequence[str], *, where: str = "index"
    ) -> ShardIndex:
        """An index from Python lists (an old manifest's inline index, or the writer's)."""
        if not all(isinstance(k, str) and k for k in keys):
            raise ManifestError(f"{where}: keys must be non-empty strings")
        if not all(type(o) is int or isinstance(o, np.integer) for o in offsets):
            raise ManifestError(f"{where}: offsets must be integers")
        if any(o < 0 or o >= 1 << 63 for o in offsets):
            raise ManifestError(
                f"{where}: offsets must be block-aligned, increasing and inside the shard"
            )
        encoded = [k.encode("utf-8") for k in keys]
        starts = np.zeros(len(encoded) + 1, dtype=_U64)
        np.cumsum([len(k) for k in encoded], out=starts[1:])
        return cls(np.asarray(offsets, dtype=_U64), starts, b"".join(encoded))

    @property
    def samples(self) -> int:
        return len(self.keys)

    @property
    def nbytes(self) -> int:
        """Bytes this index holds (arrays and key blob)."""
        return self.offsets.nbytes + self.keys._starts.nbytes + len(self.keys._blob)

    def check(self, *, samples: int, shard_bytes: int, where: str) -> ShardIndex:
        """Checks the index against its shard's entry; returns it.

        Raises:
            ManifestError: wrong counts, offsets not block-aligned, increasing by at least
                a sample's size and inside the shard, or two consecutive equal keys.
        """
        o = self.offsets.astype(np.int64)
        if len(o) != samples + 1 or len(self.keys) != samples:
            raise ManifestError(
                f"{where} has {len(o)} offsets and {len(self.keys)} keys for {samples} samples"
            )
        if (
            (o < 0).any()
            or (o % 512).any()
            or (np.diff(o) < MIN_SAMPLE_BYTES).any()
            or o[-1] + END_MARKER > shard_bytes
        ):
            raise ManifestError(
                f"{where}: offsets must be block-aligned, increasing and inside the shard's "
                f"{shard_bytes} bytes"
            )
        self._check_keys(where)
        return self

    def _check_keys(self, where: str) -> None:
        starts = self.keys._starts.astype(np.int64)
        if starts[0] != 0 or (np.diff(starts) < 1).any() or starts[-1] != len(self.keys._blob):
            raise ManifestError(f"{where}: the key table is damaged (keys must be non-empty)")
        try:
            keys = list(self.keys)
        except UnicodeDecodeError:
            raise ManifestError(f"{where}: a key is not valid UTF-8") from None
        same = [i for i in range(1, len(keys)) if keys[i] == keys[i - 1]]
        if same:
            raise ManifestError(
                f"{where}: duplicate sample key {keys[same[0]]!r} "
                f"(consecutive samples {same[0] - 1}, {same[0]})"
            )

    def to_bytes(self, *, shard_bytes: int, sha256: str) -> bytes:
        """The sidecar file's bytes (see the module's docstring)."""
        blob = bytes(self.keys._blob)
        head = (
            INDEX_MAGIC + np.array([self.samples, shard_bytes], _U64).tobytes() + _raw_sha(sha256)
        )
        body = head + np.array([len(blob)], _U64).tobytes() + self.offsets.astype(_U64).tobytes()
        body += self.keys._starts.astype(_U64).tobytes() + blob
        return body + hashlib.sha256(body).digest()

    @classmethod
    def from_buffer(
        cls, buf: Any, *, samples: int, shard_bytes: int, sha256: str, where: str
    ) -> ShardIndex:
        """Parses and checks a sidecar's bytes against the shard's manifest entry.

        Raises:
            ManifestError: naming ``where`` for a damaged, forged or stale sidecar (another
                shard's, or one written before the shard changed).
        """
        view = memoryview(buf).cast("B")
        n = _header(view, where)
        if n != samples:
            raise ManifestError(f"{where} is for {n} samples, the manifest says {samples}")
        size, digest, k = (
            int(np.frombuffer(view, _U64, 1, 16)[0]),
            bytes(view[24:56]),
            int(np.frombuffer(view, _U64, 1, 56)[0]),
        )
        if size != shard_bytes or digest != _raw_sha(sha256):
            raise ManifestError(
                f"{where} is stale: it was written for another version of the shard"
            )
        end = _HEADER + 16 * (n + 1) + k
        if len(view) != end + _DIGEST:
            raise ManifestError(f"{where} has {len(view)} bytes, its header says {end + _DIGEST}")
        if hashlib.sha256(view[:end]).digest() != bytes(view[end:]):
            raise ManifestError(f"{where}: checksum mismatch (the file is damaged)")
        offsets = np.frombuffer(view, _U64, n + 1, _HEADER)
        starts = np.frombuffer(view, _U64, n + 1, _HEADER + 8 * (n + 1))
        index = cls(offsets, starts, view[_HEADER + 16 * (n + 1) : end], hold=buf)
        return index.check(samples=samples, shard_bytes=shard_bytes, where=where)


def _header(view: memoryview, where: str) -> int:
    if len(view) < _HEADER + _DIGEST or bytes(view[:8]) != INDEX_MAGIC:
        raise ManifestError(f"{where} is not a loffdata index (magic {INDEX_MAGIC!r})")
    n = int(np.frombuffer(view, _U64, 1, 8)[0])
    if n > (len(view) - _HEADER) // 16:
        raise ManifestError(
            f"{where} declares {n} samples, more than its {len(view)} bytes can hold"
        )
    return n


def _raw_sha(sha256: str) -> bytes:
    try:
        raw = bytes.fromhex(sha256)
    except (ValueError, TypeError):
        return bytes(_DIGEST)
    return raw if len(raw) == _DIGEST else bytes(_DIGEST)


def read_index(
    url: str, *, samples: int, shard_bytes: int, sha256: str, **storage_options: Any
) -> ShardIndex:
    """Reads the sidecar at ``url``: memory-mapped on local disk, fetched whole otherwise.

    Raises:
        ManifestError: naming the sidecar if it is missing, unreadable, damaged or stale.
    """
    where = f"index {url!r}"
    try:
        buf = (
            _map_local(url)
            if "://" not in url or url.startswith("file://")
            else _fetch(url, storage_options)
        )
    except (OSError, ValueError) as err:
        raise ManifestError(f"{where} cannot be read: {err}") from None
    return ShardIndex.from_buffer(
        buf, samples=samples, shard_bytes=shard_bytes, sha256=sha256, where=where
    )


def _map_local(url: str) -> Any:
    with open(url.removeprefix("file://"), "rb") as f:
        if not f.seek(0, 2):
            return b""
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)  # pages shared by every process


def _fetch(url: str, storage_options: dict[str, Any]) -> bytes:
    got = fetch_remote([url], **storage_options)[0]  # one GET, no size probe
    if isinstance(got, Exception):
        raise got if isinstance(got, OSError | ValueError) else OSError(str(got))
    return got


def check_coverage(f: BinaryIO, offsets: np.ndarray, *, shard: str) -> None:
    """Checks that the index covers its shard exactly: its first offset is where the first
    sample's headers start, and no sample follows the end of its last (``f`` is the shard).

    Raises:
        ShardReadError: naming the shard, for an index that leaves a sample out at either end
            or starts inside another member.
    """
    from loffdata.format.tar import iter_sample_spans, key_at

    first, last = int(offsets[0]), int(offsets[-1])
    if first:
        f.seek(0)
        found = next(iter_sample_spans(f, shard=shard), None)
        begin = found[2].begin if found is not None else None
        if begin != first:
            raise ShardReadError(
                f"shard {shard!r}: its first sample starts at byte {begin}, its index says {first}"
            )
    f.seek(last)
    key = key_at(f, shard=shard, offset=last)
    if key is not None:
        raise ShardReadError(
            f"shard {shard!r}: sample {key!r} at byte {last} is past the end of its index"
        )
