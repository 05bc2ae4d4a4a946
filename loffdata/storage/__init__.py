"""Where shard bytes come from: local files, fsspec URLs with retries, the local cache.

Depends on :mod:`loffdata.format` only for error types and nothing above it.

Submodules: cache, remote.
"""

__all__: list[str] = []
