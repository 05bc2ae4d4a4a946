"""What loffdata knows about each kind of store, declared once: one table entry per protocol.

Every place that treats one store differently from another reads its entry here: the
filesystem's timeouts (``storage/shardfile.py: filesystem``), the ranged GET pinned to an
object's version and the size request (``storage/pinned.py``), which of a store's error
codes are worth a retry (``storage/retry.py``), whether a URL can be listed and globbed
(``stream/discover.py``), whether it can be written (``format/index.py``) and whether an
object appears only once complete, so that shards are written in place
(``format/writer.py``), and how a URL maps to a filesystem path
(``compat.strip_protocol``). A protocol without an entry is read through fsspec's
``cat_file``, pinned by size only, listed with fsspec's ``glob`` and written under a
temporary name.

A new object store is its entry in :data:`PROTOCOLS` (with its ranged GET, if it has
conditional requests), a loopback test, and a line in docs/streaming.md.

Bottom layer: standard library only. The clients (aiohttp for HTTP, s3fs's aiobotocore for
S3) come in through the fsspec filesystem objects passed to these functions.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Answer",
    "Protocol",
    "PROTOCOLS",
    "fs_protocol",
    "of_filesystem",
    "of_url",
    "url_protocol",
]


@dataclass(frozen=True)
class Answer:
    """What one ranged GET answered.

    Attributes:
        data: the bytes asked for (fewer if the connection dropped; none past the end), or the
            list of pieces they arrived in (a reader copying them into place copies once).
        size: the object's size, if the answer says.
        etag: the object's ETag, if the answer says.
        modified: the object's Last-Modified, if the answer says.
        whole: bytes of the whole object when the server ignored ``Range`` (then ``data`` is
            the asked part of it), else 0.
    """

    data: bytes | list[bytes]
    size: int | None
    etag: str | None = None
    modified: str | None = None
    whole: int = 0


#: (fs, path, start, end, etag to send as a precondition or None) -> Answer
RangedGet = Callable[[Any, str, int, int, "str | None"], Awaitable[Answer]]


@dataclass(frozen=True)
class Protocol:
    """One kind of store, as loffdata sees it.

    Attributes:
        names: its fsspec protocol names (the first is the main one).
        options: ``(storage_options, retry) -> storage_options`` with the retry's timeouts
            set where the caller set none; ``None``: the options as given.
        ranged_get: one ranged GET that sends the pinned ETag as a precondition
            (``If-Match``); ``None``: fsspec's ``cat_file``, pinned by size only.
        size: ``async (fs, path) -> int`` when fsspec's own size is not right; ``None``:
            ``fs.size``.
        error_code: the store's error code carried by an exception, if any.
        transient_codes: error codes that a retry can cure (throttling, internal errors).
        changed_codes: error codes that mean the precondition failed (the object changed).
        client_modules: top-level modules of its client, whose exceptions are network trouble.
        lists: whether URLs can be listed and globbed.
        writable: whether files can be written there (an index saved next to its shards).
        atomic_writes: whether an object appears only once complete (written in place).
        path_is_url: whether fsspec's path of a URL is the whole URL.
    """

    names: tuple[str, ...]
    options: Callable[[dict[str, Any], Any], dict[str, Any]] | None = None
    ranged_get: RangedGet | None = None
    size: Callable[[Any, str], Awaitable[int]] | None = None
    error_code: Callable[[BaseException], str | None] | None = None
    transient_codes: frozenset[str] = frozenset()
    changed_codes: frozenset[str] = frozenset()
    client_modules: tuple[str, ...] = ()
    lists: bool = True
    writable: bool = True
    atomic_writes: bool = False
    path_is_url: bool = False


def url_protocol(url: str | os.PathLike) -> str:
    """The protocol of ``url``: ``"s3"`` for ``s3://b/k``, ``"file"`` for a plain path."""
    text = os.fspath(url)
    return text.split("://", 1)[0] if "://" in text else "file"


def fs_protocol(fs: Any) -> str:
    """The main protocol of an fsspec filesystem (fsspec gives a string or a tuple)."""
    return fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]


def _total(content_range: str | None) -> int | None:
    """The object size from ``Content-Range: bytes a-b/size``."""
    if content_range and "/" in content_range:
        tail = content_range.rsplit("/", 1)[1].strip()
        return int(tail) if tail.isdigit() else None
    return None


# ---- HTTP(S): fsspec's HTTPFileSystem, its aiohttp session ------------------------------


def _http_options(options: dict[str, Any], retry: Any) -> dict[str, Any]:
    options.setdefault("client_kwargs", {})
    if "timeout" not in options["client_kwargs"]:
        import aiohttp

        timeout = aiohttp.ClientTimeout(
            total=retry.deadline, connect=retry.timeout, sock_read=retry.timeout
        )
        options["client_kwargs"] = {**options["client_kwargs"], "timeout": timeout}
    return options


def _http_kwargs(fs: Any, **headers: str) -> dict[str, Any]:
    kwargs = dict(fs.kwargs)
    kwargs["headers"] = {**kwargs.get("headers", {}), "Accept-Encoding": "identity", **headers}
    return kwargs


async def _http_range(fs: Any, path: str, start: int, end: int, etag: str | None) -> Answer:
    session = await fs.set_session()
    headers = {"Range": f"bytes={start}-{end - 1}", **({"If-Match": etag} if etag else {})}
    async with session.get(fs.encode_url(path), **_http_kwargs(fs, **headers)) as r:
        if r.status == 404:
            raise FileNotFoundError(path)
        if r.status == 416:  # starts at or past the end: the object is shorter than expected
            return Answer(b"", _total(r.headers.get("Content-Range")))
        r.raise_for_status()
        parts: list[bytes] = []
        try:
            async for chunk in r.content.iter_any():
                parts.append(chunk)
        except Exception:  # dropped mid-body: what arrived is kept, the caller asks for the rest
            if not parts:
                raise
        etag, modified = r.headers.get("ETag"), r.headers.get("Last-Modified")
        if r.status == 200:  # the server ignored the Range header: the whole object
            data = b"".join(parts)
            return Answer(data[start:end], len(data), etag, modified, whole=len(data))
        return Answer(parts, _total(r.headers.get("Content-Range")), etag, modified)


async def _http_size(fs: Any, url: str) -> int:
    """fsspec's HTTP ``info`` turns every failure (503 included) into FileNotFoundError,
    which would make transient errors look permanent: sizes come from our own HEAD."""
    session = await fs.set_session()
    async with session.head(fs.encode_url(url), allow_redirects=True, **_http_kwargs(fs)) as r:
        if r.status == 404:
            raise FileNotFoundError(url)
        r.raise_for_status()
        if "Content-Length" not in r.headers:
            raise OSError(f"server gives no Content-Length for {url!r}")
        return int(r.headers["Content-Length"])


# ---- S3: s3fs, its aiobotocore client -----------------------------------------------------


def _s3_options(options: dict[str, Any], retry: Any) -> dict[str, Any]:
    config = {
        "connect_timeout": retry.timeout,
        "read_timeout": retry.timeout,
        "max_pool_connections": 64,
    }
    options["config_kwargs"] = {**config, **options.get("config_kwargs", {})}
    return options


def _s3_code(err: BaseException) -> str | None:
    response = getattr(err, "response", None)
    if isinstance(response, dict):
        return response.get("Error", {}).get("Code")
    return None


async def _s3_range(fs: Any, path: str, start: int, end: int, etag: str | None) -> Answer:
    bucket, key, version_id = fs.split_path(path)
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key, "Range": f"bytes={start}-{end - 1}"}
    if version_id:
        kwargs["VersionId"] = version_id
    if etag:
        kwargs["IfMatch"] = etag
    try:
        resp = await fs._call_s3("get_object", **kwargs)
    except OSError as err:
        if any(_s3_code(e) == "InvalidRange" for e in (err, err.__cause__) if e is not None):
            return Answer(b"", None)  # starts past the end: a shorter object
        raise
    body = resp["Body"]
    try:
        data = await body.read()
    finally:
        body.close()
    modified = resp.get("LastModified")
    size = _total(resp.get("ContentRange"))
    return Answer(data, size, resp.get("ETag"), str(modified) if modified else None)


_S3_TRANSIENT = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
        "RequestLimitExceeded",
    }
)

#: every protocol with something to declare; the first entry naming a protocol wins
PROTOCOLS: tuple[Protocol, ...] = (
    Protocol(
        names=("http", "https"),
        options=_http_options,
        ranged_get=_http_range,
        size=_http_size,
        client_modules=("aiohttp", "urllib3", "requests"),
        lists=False,
        writable=False,
        path_is_url=True,
    ),
    Protocol(
        names=("s3", "s3a"),
        options=_s3_options,
        ranged_get=_s3_range,
        error_code=_s3_code,
        transient_codes=_S3_TRANSIENT,
        changed_codes=frozenset({"PreconditionFailed"}),
        client_modules=("botocore",),
        atomic_writes=True,
    ),
    Protocol(names=("gs", "gcs"), atomic_writes=True),
    Protocol(names=("az", "abfs", "abfss", "adl"), atomic_writes=True),
    Protocol(names=("memory",), atomic_writes=True),
)

_GENERIC = Protocol(names=("",))
_BY_NAME = {name: p for p in reversed(PROTOCOLS) for name in p.names}


def of_url(url: str | os.PathLike) -> Protocol:
    """The entry of ``url``'s protocol (an entry with nothing declared if it has none)."""
    return _BY_NAME.get(url_protocol(url), _GENERIC)


def of_filesystem(fs: Any) -> Protocol:
    """The entry of an fsspec filesystem's protocol (a file-like stand-in without one: none)."""
    if getattr(fs, "protocol", None) is None:
        return _GENERIC
    return _BY_NAME.get(fs_protocol(fs), _GENERIC)
