"""A local disk cache of remote shards, bounded in bytes, shared by processes.

A shard is stored under ``cache_dir`` with a name derived from its URL (a hash plus the
file name). It is downloaded to a temporary file in the same directory and renamed into
place, so readers in other processes (DataLoader workers, other ranks on the node) see
either nothing or the whole shard. A cache hit touches the file's mtime; when the cache
holds more than ``limit_bytes``, the files with the oldest mtime are deleted first (LRU),
never the shard just fetched.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from loffdata.errors import ShardReadError

__all__ = ["CacheConfig", "ShardCache"]

_TMP = ".tmp-"


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
        os.makedirs(self.root, exist_ok=True)
        self.hits = 0
        self.misses = 0

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
        if self._valid(path, size):
            self.hits += 1
            with contextlib.suppress(FileNotFoundError):  # evicted meanwhile: the caller retries
                os.utime(path)
            return path
        self.misses += 1
        self._download(url, opener, path, size)
        self.evict(keep=path)
        return path

    def _valid(self, path: str, size: int | None) -> bool:
        try:
            actual = os.path.getsize(path)
        except OSError:
            return False
        return size is None or actual == size

    def _download(
        self, url: str, opener: Callable[[], BinaryIO], path: str, size: int | None
    ) -> None:
        tmp = f"{os.path.dirname(path)}/{_TMP}{uuid.uuid4().hex[:12]}-{os.path.basename(path)}"
        try:
            with opener() as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 4 << 20)
            if size is not None and os.path.getsize(tmp) != size:
                raise ShardReadError(
                    f"shard {url!r} has {os.path.getsize(tmp)} bytes, expected {size}"
                )
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def entries(self) -> list[tuple[float, int, str]]:
        """``(mtime, bytes, path)`` of every cached shard, oldest first."""
        out = []
        for name in os.listdir(self.root):
            if name.startswith(_TMP):
                continue
            p = os.path.join(self.root, name)
            try:
                st = os.stat(p)
            except FileNotFoundError:  # evicted by another process
                continue
            out.append((st.st_mtime, st.st_size, p))
        return sorted(out)

    def evict(self, *, keep: str | None = None) -> int:
        """Deletes least recently used shards until the cache fits; returns bytes freed."""
        limit = self.config.limit_bytes
        if limit is None:
            return 0
        entries = self.entries()
        total, freed = sum(e[1] for e in entries), 0
        for _, nbytes, p in entries:
            if total <= limit:
                break
            if p == keep:
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)
            total -= nbytes
            freed += nbytes
        return freed
