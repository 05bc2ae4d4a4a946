"""Reading remote shards ahead of the reader, from the epoch's plan.

- :mod:`~loffdata.storage.prefetch.reads`: what a sample reader uses (``RemoteReads``): the
  plan in, file objects of remote shards out;
- :mod:`~loffdata.storage.prefetch.by_shard`: whole shards in blocks (``PrefetchConfig``,
  ``Prefetcher``);
- :mod:`~loffdata.storage.prefetch.by_sample`: the byte ranges of a reader's own samples, from
  the shard index (``RangePrefetcher``).

The names below are imported from their modules on first use.
"""

from __future__ import annotations

from loffdata.util import lazy_exports

_WHERE = {
    "PrefetchConfig": "loffdata.storage.prefetch.by_shard",
    "Prefetcher": "loffdata.storage.prefetch.by_shard",
    "RangePrefetcher": "loffdata.storage.prefetch.by_sample",
    "RemoteReads": "loffdata.storage.prefetch.reads",
}

__all__ = sorted(_WHERE)
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
