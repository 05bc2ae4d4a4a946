"""Reading shards wherever they live: local paths and fsspec URLs, with retries.

Local files are opened directly. Remote files (``http(s)://``, ``s3://`` or any fsspec
protocol) are read by :class:`ResumableReader`: a file object that fetches byte ranges of
``block_size`` and retries each one with exponential backoff on transient errors
(connection errors, timeouts, HTTP 5xx/408/429, S3 throttling). A connection dropped in the
middle of a range keeps what arrived and asks for the rest from the byte offset reached, so
nothing is lost or duplicated. A missing file (404, NoSuchKey, FileNotFoundError) fails at
once with :class:`~loffdata.errors.ShardReadError` naming it; a file that stays unreachable
after ``attempts`` tries, or past ``deadline`` seconds, fails the same way. Every read is
pinned to the object version of its first answer (:mod:`loffdata.storage.pinned`).
"""

from __future__ import annotations

import io
import os
from typing import Any, BinaryIO

import fsspec

from loffdata.compat import cached_filesystems, register_filesystem
from loffdata.errors import ShardReadError
from loffdata.protocols import of_url
from loffdata.redact import install_log_redaction
from loffdata.safeio import open_regular
from loffdata.storage.pinned import Pin, get_range, remote_size
from loffdata.storage.retry import RetryConfig, with_retries
from loffdata.util import is_local

__all__ = [
    "RemoteFile",
    "ResumableReader",
    "is_local",
    "filesystem",
    "open_shard",
    "remote_size",
]

install_log_redaction()  # this module and the storage libraries log URLs: never with a password

#: Buffer of local shard files: small, so that large members are read straight into their
#: destination (Python's buffered reader bypasses its buffer only for reads larger than it).
_LOCAL_BUFFER = 64 << 10

# -- fork safety: filesystems inherited by forked worker processes ------------------------

#: The parent's cached fsspec filesystems while it forks; a forked child keeps its copy.
_INHERITED: list[Any] = []


def _hold_filesystems() -> None:
    """Before a fork: holds every cached fsspec filesystem, so that the child keeps them.

    An async filesystem (HTTP, S3) holds an aiohttp session whose pooled connections are
    registered in the parent's asyncio loop, i.e. in an epoll instance that a forked child
    (a DataLoader worker) shares with the parent. fsspec clears its instance cache in the
    child right after the fork; the child then garbage-collects the parent's instances,
    closing their connections unregisters the sockets from that *shared* epoll instance,
    and the parent's next request on a pooled connection waits forever (until its timeout)
    for a response already sitting in its socket buffer. Held here, the parent's instances
    are never collected in the child (nor used: fsspec makes fresh ones per process).
    """
    _INHERITED.extend(cached_filesystems())


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_hold_filesystems, after_in_parent=_INHERITED.clear)


def filesystem(
    url: str, storage_options: dict[str, Any] | None, retry: RetryConfig
) -> tuple[Any, str]:
    """The fsspec filesystem and path of ``url``, with the protocol's timeouts set unless given
    (:mod:`loffdata.protocols`)."""
    options = dict(storage_options or {})
    protocol = of_url(url)
    if protocol.options is not None:
        options = protocol.options(options, retry)
    fs, path = fsspec.core.url_to_fs(url, **options)
    return register_filesystem(fs), path


class RemoteFile(io.RawIOBase):
    """What every read-only remote file here shares: its URL, size and offset, and seeking.

    Subclasses read from ``self.offset`` on and may drop what they buffered in
    :meth:`_moved` (called after every seek).
    """

    url: str
    size: int
    offset: int = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.offset

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.offset, io.SEEK_END: self.size}[whence]
        self.offset = max(0, base + offset)
        self._moved()
        return self.offset

    def _moved(self) -> None:
        """The offset moved by a seek (nothing to drop by default)."""


class ResumableReader(RemoteFile):
    """A read-only file over ranged requests that survive dropped connections.

    Args:
        url: the URL, used in error messages.
        fs: the fsspec filesystem.
        path: the path within ``fs``.
        retry: retry and block size settings.
        size: the file size if known (else asked once, with retries).
    """

    def __init__(
        self,
        url: str,
        fs: Any,
        path: str,
        *,
        retry: RetryConfig | None = None,
        size: int | None = None,
    ):
        super().__init__()
        self.url, self.fs, self.path = url, fs, path
        self.retry = retry or RetryConfig()
        self.size = (
            size
            if size is not None
            else with_retries(lambda: remote_size(fs, path), url=url, retry=self.retry, what="stat")
        )
        self.pin = Pin(url)  # the object version of the first answer
        self.offset = 0  # bytes handed out
        self._buf = b""
        self._buf_pos = 0
        self.requests = 0
        self._ahead: tuple[int, Any] | None = None  # (start, future) of the next block
        self._pool: Any = None

    def _moved(self) -> None:
        self._buf, self._buf_pos = b"", 0
        self._ahead = None  # a block fetched ahead for the old position is dropped

    def _fetch(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)``; a short answer is completed from the offset reached."""
        parts, pos = [], start
        while pos < end:
            data = with_retries(lambda p=pos: self._range(p, end), url=self.url, retry=self.retry)
            if not data:
                raise ShardReadError(
                    f"shard {self.url!r} ended at byte {pos}, expected {self.size} bytes"
                )
            parts.append(data)
            pos += len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _range(self, start: int, end: int) -> bytes:
        self.requests += 1
        return get_range(self.fs, self.path, start, end, self.pin)

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.size - self.offset
        n = min(n, self.size - self.offset)
        if n <= 0:
            return b""
        avail = len(self._buf) - self._buf_pos
        if avail >= n:
            out = self._buf[self._buf_pos : self._buf_pos + n]
            self._buf_pos += n
        else:
            out = self._read_more(n, avail)
        self.offset += n
        return out

    def _read_more(self, n: int, avail: int) -> bytes:
        head = self._buf[self._buf_pos :]
        start = self.offset + avail
        block = self._take_ahead(start) or b""
        if len(block) < n - avail:  # a large read: the rest in one request
            end = min(self.size, max(start + n - avail, start + self.retry.block_size))
            block += self._fetch(start + len(block), end)
        self._fetch_ahead(start + len(block))
        need = n - avail
        self._buf, self._buf_pos = block, need
        return head + block[:need] if head else block[:need]

    def _fetch_ahead(self, start: int) -> None:
        """Starts fetching the block at ``start`` in the background (read-ahead), so the
        network transfer overlaps the parsing of the current block."""
        if start >= self.size:
            return
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(1, thread_name_prefix="loffdata-readahead")
        end = min(self.size, start + self.retry.block_size)
        self._ahead = (start, self._pool.submit(self._fetch, start, end))

    def _take_ahead(self, start: int) -> bytes | None:
        """The block fetched ahead, if it starts at ``start`` (its errors are raised here)."""
        ahead, self._ahead = self._ahead, None
        if ahead is None or ahead[0] != start:
            return None
        return ahead[1].result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self._ahead = None
        super().close()

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


def open_shard(
    url: str,
    *,
    fs: Any = None,
    path: str | None = None,
    retry: RetryConfig | None = None,
    size: int | None = None,
    storage_options: dict[str, Any] | None = None,
) -> BinaryIO:
    """Opens a shard for sequential reading: a local file, or a :class:`ResumableReader`
    (on ``fs`` and ``path``, else on the filesystem of ``url`` with ``storage_options``).

    Raises:
        ShardReadError: naming ``url`` if it is missing or unreachable.
    """
    retry = retry or RetryConfig()
    if is_local(url) and fs is None:
        local = url[len("file://") :] if url.startswith("file://") else url
        try:
            return open_regular(local, what="shard", buffering=_LOCAL_BUFFER)  # no FIFO, no device
        except OSError as err:
            raise ShardReadError(
                f"shard {url!r} is missing or not readable ({type(err).__name__}: {err})"
            ) from err
    if fs is None or path is None:
        fs, path = filesystem(url, storage_options, retry)
    return ResumableReader(url, fs, path, retry=retry, size=size)
