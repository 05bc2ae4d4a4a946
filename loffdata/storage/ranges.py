"""One ranged GET of a remote object, pinned to the version its first answer came from.

An object store may replace an object between two range requests of the same read (a
re-upload under the same name). Mixing bytes of two versions would deliver samples that
never existed, so every reader of a remote shard keeps a :class:`Pin`: the size, ``ETag``
and ``Last-Modified`` of the first answer. Later requests send ``If-Match`` (HTTP and S3
refuse with 412 once the object changed), and every answer is compared with the pin
anyway (a server may ignore ``If-Match``). A change raises :class:`ObjectChanged`, a
:class:`~loffdata.errors.ShardReadError` naming the URL; it is not retried.

HTTP requests go through the aiohttp session of fsspec's ``HTTPFileSystem`` (its headers,
auth and timeouts), S3 through s3fs's aiobotocore client; any other fsspec filesystem is
read with its ``cat_file`` and pinned by size only.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

from loffdata.errors import ShardReadError

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


def _precondition_failed(err: BaseException) -> bool:
    for e in (err, err.__cause__):
        if e is None:
            continue
        if getattr(e, "status", None) == 412:
            return True
        response = getattr(e, "response", None)
        if (
            isinstance(response, dict)
            and response.get("Error", {}).get("Code") == "PreconditionFailed"
        ):
            return True
    return False


def _s3_code(err: BaseException) -> str | None:
    for e in (err, err.__cause__):
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            return response.get("Error", {}).get("Code")
    return None


def _total(content_range: str | None) -> int | None:
    """The object size from ``Content-Range: bytes a-b/size``."""
    if content_range and "/" in content_range:
        tail = content_range.rsplit("/", 1)[1].strip()
        return int(tail) if tail.isdigit() else None
    return None


def _range_ignored(url: str, start: int, end: int, size: int) -> RangeIgnored:
    return RangeIgnored(
        f"shard {url!r}: the server ignored the Range header (asked for bytes {start}-{end - 1}, "
        f"got {size} bytes, i.e. the whole object); random access (ds[i], ds.indexed()) needs a "
        "server with Range support (nginx, Caddy, S3, any object store); streaming works without it"
    )


async def _http_range(
    fs: Any, path: str, start: int, end: int, pin: Pin, strict: bool = False
) -> tuple[list[bytes], Version]:
    session = await fs.set_session()
    kwargs = dict(fs.kwargs)
    headers = {
        **kwargs.get("headers", {}),
        "Range": f"bytes={start}-{end - 1}",
        "Accept-Encoding": "identity",
    }
    if pin.etag:
        headers["If-Match"] = pin.etag
    kwargs["headers"] = headers
    async with session.get(fs.encode_url(path), **kwargs) as r:
        if r.status == 404:
            raise FileNotFoundError(path)
        if r.status == 416:  # starts at or past the end: the object is shorter than expected
            return [], Version(_total(r.headers.get("Content-Range")))
        r.raise_for_status()
        parts: list[bytes] = []
        try:
            async for chunk in r.content.iter_any():
                parts.append(chunk)
        except Exception:  # dropped mid-body: what arrived is kept, the caller asks for the rest
            if not parts:
                raise
        size = _total(r.headers.get("Content-Range"))
        if r.status == 200:  # the server ignored the Range header: the whole object
            data = b"".join(parts)
            if strict and len(data) > end - start:
                raise _range_ignored(pin.url, start, end, len(data))
            size, parts = len(data), [data[start:end]]
        return parts, Version(size, r.headers.get("ETag"), r.headers.get("Last-Modified"))


async def _s3_range(
    fs: Any, path: str, start: int, end: int, pin: Pin
) -> tuple[list[bytes], Version]:
    bucket, key, version_id = fs.split_path(path)
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key, "Range": f"bytes={start}-{end - 1}"}
    if version_id:
        kwargs["VersionId"] = version_id
    if pin.etag:
        kwargs["IfMatch"] = pin.etag
    try:
        resp = await fs._call_s3("get_object", **kwargs)
    except OSError as err:
        if _s3_code(err) == "InvalidRange":  # starts past the end: a shorter object
            return [], Version(None)
        raise
    body = resp["Body"]
    try:
        data = await body.read()
    finally:
        body.close()
    modified = resp.get("LastModified")
    return [data] if data else [], Version(
        _total(resp.get("ContentRange")), resp.get("ETag"), str(modified) if modified else None
    )


def _kind(fs: Any) -> str:
    from fsspec.implementations.http import HTTPFileSystem

    if isinstance(fs, HTTPFileSystem):
        return "http"
    if type(fs).__module__.startswith("s3fs"):
        return "s3"
    return "other"


async def fetch_range(
    fs: Any, path: str, start: int, end: int, pin: Pin, strict: bool = False, pieces: bool = False
) -> bytes | list[bytes]:
    """Bytes ``[start, end)`` of ``path`` (fewer if the connection drops), checked against ``pin``;
    with ``pieces``, as the list of pieces they arrived in (empty at the end of the object),
    so that a reader copying them into place copies them once, not twice.

    Runs on ``fs.loop`` (fsspec's IO loop) for HTTP and S3; other filesystems are called in
    a thread. A server that ignores ``Range`` (``python -m http.server`` answers 200 with the
    whole object) is coped with by slicing, or, with ``strict`` (random access, where it would
    mean a whole download per sample), named.

    Raises:
        ObjectChanged: the object is another version than the pinned one.
        RangeIgnored: ``strict`` and the server sent the whole object.
    """
    kind = _kind(fs)
    try:
        if kind == "http":
            data, version = await _http_range(fs, path, start, end, pin, strict)
        elif kind == "s3":
            data, version = await _s3_range(fs, path, start, end, pin)
        else:
            data = await asyncio.to_thread(fs.cat_file, path, start=start, end=end)
            data, version = [data] if data else [], Version(None)
    except Exception as err:
        if pin.etag and _precondition_failed(err):
            raise pin.changed(err) from err
        raise
    pin.check(version)
    if pieces:
        return data
    return data[0] if len(data) == 1 else b"".join(data)


def get_range(fs: Any, path: str, start: int, end: int, pin: Pin, strict: bool = False) -> bytes:
    """:func:`fetch_range` from synchronous code."""
    if _kind(fs) == "other":
        data = fs.cat_file(path, start=start, end=end)
        if len(data) > end - start:  # a filesystem that ignored the range
            if strict:
                raise _range_ignored(pin.url, start, end, len(data))
            data = data[start:end]
        return data
    from fsspec.asyn import sync

    return sync(fs.loop, fetch_range, fs, path, start, end, pin, strict)


def remote_size(fs: Any, path: str) -> int:
    """The size of a remote file; 404 raises FileNotFoundError, other failures keep their type.

    fsspec's HTTP ``info`` turns every failure (503 included) into FileNotFoundError, which
    would make transient errors look permanent, so HTTP sizes come from our own HEAD request.
    """
    from fsspec.implementations.http import HTTPFileSystem

    if isinstance(fs, HTTPFileSystem):
        from fsspec.asyn import sync

        return sync(fs.loop, _http_size, fs, path)
    return int(fs.size(path))


async def _http_size(fs: Any, url: str) -> int:
    session = await fs.set_session()
    kwargs = dict(fs.kwargs)
    kwargs["headers"] = {**kwargs.get("headers", {}), "Accept-Encoding": "identity"}
    async with session.head(fs.encode_url(url), allow_redirects=True, **kwargs) as r:
        if r.status == 404:
            raise FileNotFoundError(url)
        r.raise_for_status()
        if "Content-Length" not in r.headers:
            raise OSError(f"server gives no Content-Length for {url!r}")
        return int(r.headers["Content-Length"])
