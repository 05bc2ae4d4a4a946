"""Where shard bytes come from: local files, fsspec URLs with retries, the local cache.

Depends on :mod:`loffdata.format` only for error types and nothing above it.

Submodules: remote (retries, fsspec), ranges (one pinned ranged GET), prefetch (by shard),
rangefetch (by sample), remotereads (what a reader uses of them), cache.

The names below are imported from their modules on first use (see docs/api.md).
"""

from __future__ import annotations

from loffdata.util import lazy_exports

_WHERE = {
    "RetryConfig": "loffdata.storage.remote",
    "ResumableReader": "loffdata.storage.remote",
    "open_shard": "loffdata.storage.remote",
    "filesystem": "loffdata.storage.remote",
    "is_transient": "loffdata.storage.remote",
    "with_retries": "loffdata.storage.remote",
    "CacheConfig": "loffdata.storage.cache",
    "PrefetchConfig": "loffdata.storage.prefetch",
    "ShardCache": "loffdata.storage.cache",
}

__all__ = sorted(_WHERE)
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
