"""Where shard bytes come from: local files, fsspec URLs with retries, the local cache.

Depends on :mod:`loffdata.format` only for error types and nothing above it.

Modules, by what they do for a reader:

- ``shardfile``: open a shard, local or remote (fsspec), as a file object that resumes
  (``open_shard``, ``filesystem``, ``ResumableReader``);
- ``pinned``: one ranged GET pinned to the object's version (ETag, ``If-Match``);
- ``looptasks``: fetches as tasks on fsspec's IO loop, started there (a completion
  starts the next);
- ``retry``: the retry rules (``RetryConfig``, which errors are transient, backoff);
- ``prefetch/``: reading ahead of the reader: ``reads`` (the reader's one entry point: the
  plan in, file objects out), ``by_shard`` (whole shards in blocks), ``by_sample`` (the
  samples' byte ranges, from the shard index);
- ``cache`` and ``cachefiles``: the node-local shard cache and its files.

The names below are imported from their modules on first use (see docs/api.md).
"""

from __future__ import annotations

from loffdata.util import lazy_exports

_WHERE = {
    "RetryConfig": "loffdata.storage.retry",
    "ResumableReader": "loffdata.storage.shardfile",
    "open_shard": "loffdata.storage.shardfile",
    "filesystem": "loffdata.storage.shardfile",
    "is_transient": "loffdata.storage.retry",
    "with_retries": "loffdata.storage.retry",
    "CacheConfig": "loffdata.storage.cache",
    "PrefetchConfig": "loffdata.storage.prefetch.by_shard",
    "ShardCache": "loffdata.storage.cache",
}

__all__ = sorted(_WHERE)
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
