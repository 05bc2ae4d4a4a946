"""A local disk cache of remote shards, bounded in bytes, shared by processes.

A shard is stored under ``cache_dir`` with a name derived from its URL (a hash plus the
file name). It is downloaded to a temporary file in the same directory and renamed into
place, so readers in other processes (DataLoader workers, other ranks on the node) see
either nothing or the whole shard. A cache hit touches the file's mtime; when the cache
holds more than ``limit_bytes``, the files with the oldest mtime are deleted first (LRU),
never the shard just fetched. A download holds an exclusive ``flock`` on the shard's lock
file (under ``.locks/``), so a shard wanted by several processes at once is downloaded by
one; the others wait for it and then read the cached copy (a lock dies with its process).

Integrity: a download is hashed as it is written; where the manifest gives the shard's
sha256 (:meth:`ShardCache.expect`), a copy that does not match is never stored. Next to
each copy a record (under ``.meta/``) keeps its sha256 and the object version it was
fetched under (size, ETag, Last-Modified). Before a copy is served its record must match
the expected sha256 (a republished shard with a new manifest is fetched again, even at
the same size), and its bytes are hashed once per process (again whenever the file
changes): flipped bytes make it be fetched again. Temporaries carry their process id;
those of dead processes are deleted, and live ones count in the byte budget.

:class:`CacheFiller` fills the cache ahead of the reader with the plan-driven prefetcher
(:mod:`loffdata.storage.prefetch.by_shard`), in read order, at most ``ahead_bytes`` ahead.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import posixpath
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from loffdata.errors import ShardReadError
from loffdata.storage.cachefiles import (
    TMP,
    abandoned,
    copy_hashed,
    file_sha256,
    temp_path,
    version_of,
    write_atomic,
)

__all__ = ["CacheConfig", "CacheFiller", "ShardCache"]

log = logging.getLogger(__name__)
_LOCKS = ".locks"
_META = ".meta"


@dataclass(frozen=True)
class CacheConfig:
    """Where remote shards are cached and how many bytes the cache may hold (``None``: no bound)."""

    cache_dir: str
    limit_bytes: int | None = None


class ShardCache:
    """A directory of cached shards with an LRU byte budget.

    Args:
        config: the cache directory and its byte budget.
    """

    def __init__(self, config: CacheConfig):
        self.config = config
        self.root = os.path.abspath(os.fspath(config.cache_dir))
        os.makedirs(os.path.join(self.root, _LOCKS), exist_ok=True)
        os.makedirs(os.path.join(self.root, _META), exist_ok=True)
        self.hits = 0
        self.misses = 0
        #: cached copies found damaged or stale (fetched again)
        self.refetched = 0
        #: temporaries of dead processes deleted
        self.reclaimed = 0
        self._expected: dict[str, str] = {}  # url -> the manifest's sha256
        self._checked: dict[
            str, tuple[int, int, int]
        ] = {}  # path -> (inode, size, mtime_ns) hashed
        self.reclaim()

    def expect(self, url: str, sha256: str | None) -> None:
        """The sha256 the cached copy of ``url`` must have (from the manifest)."""
        if sha256:
            self._expected[url] = sha256

    def path_for(self, url: str) -> str:
        """The local path a shard URL is cached at."""
        digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:20]
        return os.path.join(self.root, f"{digest}-{posixpath.basename(url.rstrip('/'))}")

    def get(self, url: str, opener: Callable[[], BinaryIO], *, size: int | None = None) -> str:
        """The local path of ``url``, downloading it with ``opener`` when not cached.

        Args:
            url: the shard URL (the cache key).
            opener: returns a readable file object of the remote shard.
            size: the expected size in bytes; a cached file of another size is fetched again.
        """
        path = self.path_for(url)
        if not self._valid(path, size, url):
            fd = self._lock(path, wait=True)  # one download per shard on the node; others wait here
            try:
                if not self._valid(path, size, url):
                    return self.store(url, opener, size=size)
            finally:
                os.close(fd)  # releases the lock
        self.hits += 1
        with contextlib.suppress(FileNotFoundError):  # evicted meanwhile: the caller retries
            os.utime(path)
        return path

    def has(self, url: str, size: int | None) -> bool:
        """Whether ``url`` is cached (with ``size`` bytes, if given)."""
        return self._valid(self.path_for(url), size, url)

    def claim(self, url: str, size: int | None) -> int | None:
        """Takes the download of ``url`` if it is neither cached nor being downloaded by
        another process or thread: the descriptor holding its lock (close it to release),
        else ``None``."""
        path = self.path_for(url)
        if self._valid(path, size, url):
            return None
        fd = self._lock(path, wait=False)
        if fd is not None and self._valid(path, size, url):  # stored just before the lock was taken
            os.close(fd)
            return None
        return fd

    def store(self, url: str, opener: Callable[[], BinaryIO], *, size: int | None) -> str:
        """Downloads ``url`` into the cache (the caller holds its lock); returns the path."""
        path = self.path_for(url)
        self.misses += 1
        self._download(url, opener, path, size)
        self.evict(keep=path)
        return path

    def _lock(self, path: str, *, wait: bool) -> int | None:
        fd = os.open(
            os.path.join(self.root, _LOCKS, os.path.basename(path)), os.O_RDWR | os.O_CREAT, 0o644
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _valid(self, path: str, size: int | None, url: str) -> bool:
        """Whether the copy at ``path`` may be served: size, recorded and actual sha256."""
        try:
            st = os.stat(path)
        except OSError:
            return False
        if size is not None and st.st_size != size:
            return False
        want = self._expected.get(url)
        if want is None:
            return True
        meta = self._meta(path)
        if meta.get("sha256") != want:  # another version (a republish) or no record
            return self._stale(path)
        if self._checked.get(path) == (st.st_ino, st.st_size, st.st_mtime_ns):
            return True
        if file_sha256(path) != want:  # damaged on disk
            log.warning("cached copy of %s does not match its sha256; fetching it again", url)
            return self._stale(path)
        self._checked[path] = (st.st_ino, st.st_size, st.st_mtime_ns)
        return True

    def _stale(self, path: str) -> bool:
        self._checked.pop(path, None)
        self.refetched += 1
        return False

    def _meta_path(self, path: str) -> str:
        return os.path.join(self.root, _META, os.path.basename(path) + ".json")

    def _meta(self, path: str) -> dict[str, Any]:
        try:
            with open(self._meta_path(path), "rb") as f:
                meta = json.loads(f.read(1 << 16))
        except (OSError, ValueError):
            return {}
        return meta if isinstance(meta, dict) else {}

    def version(self, url: str) -> dict[str, Any]:
        """The record of the cached copy of ``url``: ``sha256``, ``size`` and the object
        ``version`` (``size``, ``etag``, ``modified``) it was fetched under; ``{}`` if none."""
        return self._meta(self.path_for(url))

    def _download(
        self, url: str, opener: Callable[[], BinaryIO], path: str, size: int | None
    ) -> None:
        tmp = temp_path(path)
        try:
            with opener() as src, open(tmp, "wb") as dst:
                digest, got = copy_hashed(src, dst)
                version = version_of(src)
            if size is not None and got != size:
                raise ShardReadError(f"shard {url!r} has {got} bytes, expected {size}")
            want = self._expected.get(url)
            if want is not None and digest != want:
                raise ShardReadError(
                    f"shard {url!r} does not match the manifest's sha256 (got {digest[:16]}...)"
                )
            meta = {
                "url_sha256": hashlib.sha256(url.encode()).hexdigest(),
                "sha256": digest,
                "size": got,
                "version": version,
            }
            write_atomic(self._meta_path(path), json.dumps(meta).encode())
            os.replace(tmp, path)
            st = os.stat(path)
            self._checked[path] = (st.st_ino, st.st_size, st.st_mtime_ns)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def reclaim(self) -> int:
        """Deletes the temporaries of dead processes (and old ones without a process id);
        returns how many."""
        n = 0
        for name in os.listdir(self.root):
            if name.startswith(TMP) and abandoned(os.path.join(self.root, name), name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.root, name))
                    n += 1
        self.reclaimed += n
        return n

    def entries(self) -> list[tuple[float, int, str]]:
        """``(mtime, bytes, path)`` of every cached shard, oldest first."""
        out = []
        for name in os.listdir(self.root):
            p = os.path.join(self.root, name)
            try:
                st = os.stat(p)
            except FileNotFoundError:  # evicted by another process
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            out.append((st.st_mtime, st.st_size, p))
        return sorted(out)

    def evict(self, *, keep: str | None = None) -> int:
        """Deletes least recently used shards until the cache fits; returns bytes freed."""
        limit = self.config.limit_bytes
        if limit is None:
            return 0
        self.reclaim()
        entries = (
            self.entries()
        )  # temporaries (downloads in progress) count, and are never deleted here
        total, freed = sum(e[1] for e in entries), 0
        for _, nbytes, p in entries:
            if total <= limit:
                break
            if p == keep or os.path.basename(p).startswith(TMP):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)
                os.unlink(self._meta_path(p))
            total -= nbytes
            freed += nbytes
        return freed


class CacheFiller:
    """Downloads planned shards into the cache in the background, ahead of the reader.

    The filler claims shards (their lock) before anything is fetched, so that processes
    sharing the cache never download a shard twice; a shard claimed elsewhere is left to
    its claimer (the reader waits for it on the lock). The claimed shards are handed to
    the prefetcher, whose requests in flight fetch their blocks; the filler writes them out.

    Args:
        cache: the cache.
        prefetcher: a :class:`~loffdata.storage.prefetch.by_shard.Prefetcher`.
        ahead_bytes: bytes of shards claimed or filled and not yet reached by the reader.
    """

    def __init__(self, cache: ShardCache, prefetcher: Any, *, ahead_bytes: int):
        self.cache, self.prefetcher, self.ahead_bytes = cache, prefetcher, ahead_bytes
        self._cond = threading.Condition()
        self._todo: list[Any] = []
        self._ahead: dict[str, int] = {}  # claimed or filled, not yet reached: url -> bytes
        self._reached: set[str] = set()
        self._claimed: list[tuple[Any, int]] = []  # (ShardRead, lock descriptor)
        self._stop = False
        self._thread: threading.Thread | None = None

    def fill(self, reads: list[Any]) -> None:
        """Fills these shards (``ShardRead``s), in order; replaces the previous list."""
        with self._cond:
            self._todo, self._reached = (
                [r for r in reads if not self.cache.has(r.url, r.size)],
                set(),
            )
            self._cond.notify_all()
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="loffdata-cache-fill", daemon=True
            )
            self._thread.start()

    def reached(self, url: str) -> None:
        """The reader opens ``url``: it no longer counts as ahead."""
        with self._cond:
            self._ahead.pop(url, None)
            self._reached.add(url)
            self._cond.notify_all()

    def _claim_more(self) -> None:
        """Claims planned shards while the look-ahead allows (called with the lock held)."""
        changed = False
        while self._todo and (not self._claimed or sum(self._ahead.values()) < self.ahead_bytes):
            read = self._todo.pop(0)
            if read.url in self._reached:
                continue
            fd = self.cache.claim(read.url, read.size)
            if fd is not None:
                self._claimed.append((read, fd))
                self._ahead[read.url] = read.size
                changed = True
        if changed:
            self.prefetcher.plan([r for r, _ in self._claimed])

    def _next(self) -> tuple[Any, int] | None:
        with self._cond:
            while not self._stop:
                self._claim_more()
                if self._claimed:
                    return self._claimed.pop(0)
                self._cond.wait(0.5)
            return None

    def _run(self) -> None:
        while (job := self._next()) is not None:
            read, fd = job
            try:
                self.cache.store(read.url, lambda r=read: self.prefetcher.open(r), size=read.size)
            except Exception as err:  # the reader meets it again when it opens the shard
                log.debug("cache fill of %s failed: %s", read.url, err)
            finally:
                os.close(fd)
                self.prefetcher.forget(read.url)

    def close(self) -> None:
        with self._cond:
            self._stop = True
            for _, fd in self._claimed:
                os.close(fd)
            self._claimed = []
            self._cond.notify_all()
