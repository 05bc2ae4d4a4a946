"""Every use of a private torch or fsspec API, each with a public fallback.

Nothing else in loffdata touches a private name of a library. Each function below says what
the private API gives, and what happens when a torch or fsspec release removes it (the
fallback is always correct; it may be slower). ``tests/test_compat.py`` runs both paths.

- :func:`storage_use_count`: how many tensors share a storage, so that a pooled batch
  buffer is handed back to its worker only once the consumer no longer uses it
  (``torch._C._storage_Use_Count``). Fallback: ``None``, and the loader then gives every
  batch a fresh buffer (no reuse, no risk).
- :func:`shutdown_workers`: stops a DataLoader iterator's worker processes now
  (``_MultiProcessingDataLoaderIter._shutdown_workers``; torch has no public way).
  Fallback: the workers stop when the iterator is garbage-collected (DataLoader's own
  ``__del__``), i.e. when the loader drops it.
- :func:`cached_filesystems`: the fsspec filesystems alive in this process, held across a
  fork (see :mod:`loffdata.storage.shardfile`). Private path: the per-class instance cache
  ``_cache`` of fsspec's ``_Cached`` metaclass. Public fallback: the filesystems loffdata
  created itself, recorded with :func:`register_filesystem`.
- :func:`worker_processes`: a DataLoader iterator's worker processes, to name a dead one
  (``_workers``). Fallback: none known, and torch's own error about the dead worker is
  raised instead of :class:`~loffdata.errors.WorkerDiedError`.
- :func:`new_shared_storage`: a storage allocated in shared memory at once
  (``torch.UntypedStorage._new_shared``). Fallback: ``share_memory_()`` of a fresh buffer
  (allocated privately, then copied into shared memory: 2-3x slower, same result).
- :func:`strip_protocol`: the path of a URL within its fsspec filesystem (the class method
  ``_strip_protocol`` that fsspec's own ``url_to_fs`` uses). Fallback: the URL less its
  ``protocol://`` (HTTP: the whole URL), what fsspec's filesystems expect.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Any

from loffdata.protocols import of_url

__all__ = [
    "can_count_storage_uses",
    "storage_use_count",
    "shutdown_workers",
    "register_filesystem",
    "cached_filesystems",
    "worker_processes",
    "new_shared_storage",
    "strip_protocol",
]

#: Filesystems created by :func:`loffdata.storage.shardfile.filesystem` (the public fallback
#: of :func:`cached_filesystems`).
_CREATED: weakref.WeakSet[Any] = weakref.WeakSet()


def _use_count_fn() -> Any:
    import torch

    return getattr(torch._C, "_storage_Use_Count", None)


def can_count_storage_uses() -> bool:
    """Whether this torch can count the users of a storage (buffers can then be reused)."""
    return _use_count_fn() is not None


def storage_use_count(t: Any) -> int | None:
    """Number of tensors (views included) using ``t``'s storage; ``None`` if this torch
    cannot tell (then no buffer may be assumed free)."""
    fn = _use_count_fn()
    if fn is None:
        return None
    return int(fn(t.untyped_storage()._cdata))


def shutdown_workers(it: Any) -> bool:
    """Stops the worker processes of DataLoader iterator ``it`` now, if torch lets us.

    Returns:
        ``True`` if they were stopped; ``False`` when the iterator has no workers or this
        torch has no shutdown method (they stop when ``it`` is garbage-collected).
    """
    shutdown = getattr(it, "_shutdown_workers", None)
    if shutdown is None:
        return False
    shutdown()
    return True


def register_filesystem(fs: Any) -> Any:
    """Records a filesystem loffdata created (held across forks even without fsspec's
    private cache); returns ``fs``."""
    with contextlib.suppress(TypeError):  # not weak-referenceable: fsspec's cache holds it
        _CREATED.add(fs)
    return fs


def cached_filesystems() -> list[Any]:
    """The fsspec filesystem instances alive in this process that a forked child must not
    collect: fsspec's instance cache where it exists, plus every registered one."""
    from fsspec.spec import AbstractFileSystem

    found: dict[int, Any] = {}
    todo, seen = [AbstractFileSystem], set()
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        todo += cls.__subclasses__()
        cache = cls.__dict__.get("_cache")
        if isinstance(cache, dict):
            found.update((id(fs), fs) for fs in cache.values())
    found.update((id(fs), fs) for fs in list(_CREATED))
    return list(found.values())


def worker_processes(it: Any) -> list[Any]:
    """The worker processes of DataLoader iterator ``it``; ``[]`` if torch does not say."""
    return list(getattr(it, "_workers", None) or [])


def new_shared_storage(nbytes: int) -> Any:
    """An untyped storage of ``nbytes`` bytes in shared memory."""
    import torch

    new_shared = getattr(torch.UntypedStorage, "_new_shared", None)
    if new_shared is not None:
        return new_shared(nbytes)
    return torch.empty(nbytes, dtype=torch.uint8).share_memory_().untyped_storage()


def strip_protocol(fs: Any, url: str) -> str:
    """The path of ``url`` within the fsspec filesystem ``fs``."""
    strip = getattr(type(fs), "_strip_protocol", None)
    if strip is not None:
        return strip(url)
    path = url.split("://", 1)[1] if "://" in url else url
    return url if of_url(url).path_is_url else path  # an HTTP path is its whole URL
