"""One ranged GET of a remote object, pinned to the version its first answer came from.

An object store may replace an object between two range requests of the same read (a
re-upload under the same name). Mixing bytes of two versions would deliver samples that
never existed, so every reader of a remote shard keeps a :class:`Pin`: the size, ``ETag``
and ``Last-Modified`` of the first answer. Later requests send ``If-Match`` (HTTP and S3
refuse with 412 once the object changed), and every answer is compared with the pin
anyway (a server may ignore ``If-Match``). A change raises :class:`ObjectChanged`, a
:class:`~loffdata.errors.ShardReadError` naming the URL; it is not retried.

Each protocol's ranged GET is its entry in :mod:`loffdata.protocols` (HTTP: the aiohttp
session of fsspec's ``HTTPFileSystem``, with its headers, auth and timeouts; S3: s3fs's
aiobotocore client); any other fsspec filesystem is read with its ``cat_file`` and pinned by
size only.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

from loffdata.errors import ShardReadError
from loffdata.protocols import Protocol, of_filesystem

__all__ = [
    "ObjectChanged",
    "Pin",
    "RangeIgnored",
    "Version",
    "fetch_range",
    "get_range",
    "remote_size",
]


class ObjectChanged(ShardReadError):
    """The remote object changed (another ETag, Last-Modified or size) during a read."""


class RangeIgnored(ShardReadError):
    """The server answered a range request with more than the range (it ignored ``Range``)."""


@dataclass(frozen=True)
class Version:
    """What identifies one version of an object (``None``: the server did not say)."""

    size: int | None
    etag: str | None = None
    modified: str | None = None


class Pin:
    """The version a read is pinned to: set by the first answer, checked against the others.

    Args:
        url: the object's URL (named in errors).
        size: the expected size (e.g. from the manifest), if known.
    """

    def __init__(self, url: str, size: int | None = None):
        self.url, self.version, self._lock = url, Version(size), threading.Lock()

    @property
    def etag(self) -> str | None:
        return self.version.etag

    def check(self, got: Version) -> None:
        """Pins ``got`` if nothing is pinned yet, else raises :class:`ObjectChanged` if it
        differs."""
        with self._lock:
            have = self.version
            for what in ("size", "etag", "modified"):
                old, new = getattr(have, what), getattr(got, what)
                if old is not None and new is not None and old != new:
                    raise ObjectChanged(
                        f"shard {self.url!r} changed while being read ({what} {old} -> {new}); "
                        "shards must not be replaced while a loader reads them"
                    )
            self.version = Version(
                have.size if have.size is not None else got.size,
                have.etag or got.etag,
                have.modified or got.modified,
            )

    def changed(self, err: BaseException) -> ObjectChanged:
        """The error for a 412 answer to ``If-Match``."""
        return ObjectChanged(
            f"shard {self.url!r} changed while being read (ETag {self.etag} no longer matches: "
            f"{type(err).__name__}); shards must not be replaced while a loader reads them"
        )


def _precondition_failed(err: BaseException, protocol: Protocol) -> bool:
    """Whether ``err`` is the answer to a failed ``If-Match`` (HTTP 412, or the store's code)."""
    for e in (err, err.__cause__):
        if e is None:
            continue
        if getattr(e, "status", None) == 412:
            return True
        if protocol.error_code is not None and protocol.error_code(e) in protocol.changed_codes:
            return True
    return False


def _range_ignored(url: str, start: int, end: int, size: int) -> RangeIgnored:
    return RangeIgnored(
        f"shard {url!r}: the server ignored the Range header (asked for bytes {start}-{end - 1}, "
        f"got {size} bytes, i.e. the whole object); random access (ds[i], ds.indexed()) needs a "
        "server with Range support (nginx, Caddy, S3, any object store); streaming works without it"
    )


async def fetch_range(
    fs: Any, path: str, start: int, end: int, pin: Pin, strict: bool = False, pieces: bool = False
) -> bytes | list[bytes]:
    """Bytes ``[start, end)`` of ``path`` (fewer if the connection drops), checked against ``pin``;
    with ``pieces``, as the list of pieces they arrived in (empty at the end of the object),
    so that a reader copying them into place copies them once, not twice.

    Runs on ``fs.loop`` (fsspec's IO loop) with the protocol's own ranged GET
    (:mod:`loffdata.protocols`: HTTP, S3); other filesystems are called in a thread. A server
    that ignores ``Range`` (``python -m http.server`` answers 200 with the whole object) is
    coped with by slicing, or, with ``strict`` (random access, where it would mean a whole
    download per sample), named.

    Raises:
        ObjectChanged: the object is another version than the pinned one.
        RangeIgnored: ``strict`` and the server sent the whole object.
    """
    protocol = of_filesystem(fs)
    try:
        if protocol.ranged_get is not None:
            answer = await protocol.ranged_get(fs, path, start, end, pin.etag)
            if strict and answer.whole > end - start:
                raise _range_ignored(pin.url, start, end, answer.whole)
            data, version = answer.data, Version(answer.size, answer.etag, answer.modified)
        else:
            data = await asyncio.to_thread(fs.cat_file, path, start=start, end=end)
            version = Version(None)
    except Exception as err:
        if pin.etag and _precondition_failed(err, protocol):
            raise pin.changed(err) from err
        raise
    pin.check(version)
    parts = data if isinstance(data, list) else ([data] if data else [])
    if pieces:
        return parts
    return parts[0] if len(parts) == 1 else b"".join(parts)


def get_range(fs: Any, path: str, start: int, end: int, pin: Pin, strict: bool = False) -> bytes:
    """:func:`fetch_range` from synchronous code."""
    if of_filesystem(fs).ranged_get is None:
        data = fs.cat_file(path, start=start, end=end)
        if len(data) > end - start:  # a filesystem that ignored the range
            if strict:
                raise _range_ignored(pin.url, start, end, len(data))
            data = data[start:end]
        return data
    from fsspec.asyn import sync

    return sync(fs.loop, fetch_range, fs, path, start, end, pin, strict)


def remote_size(fs: Any, path: str) -> int:
    """The size of a remote file; 404 raises FileNotFoundError, other failures keep their type
    (a protocol whose fsspec size hides them declares its own request, as HTTP does)."""
    size = of_filesystem(fs).size
    if size is not None:
        from fsspec.asyn import sync

        return sync(fs.loop, size, fs, path)
    return int(fs.size(path))
