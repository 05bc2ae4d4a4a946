"""Shard indexes: where each sample of a shard starts, and its key.

The writer records the index while it writes (:class:`~loffdata.format.writer.ShardWriter`);
:func:`index_dataset` computes it for shards written by anything else (``loffdata index
DIR``), by reading every shard once. Readers use an index for random access
(:mod:`loffdata.stream.scatter`) and check every key they read against it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import fsspec

from loffdata.errors import ManifestError
from loffdata.format.manifest import Manifest
from loffdata.format.tar import iter_sample_spans

__all__ = ["shard_index", "index_dataset"]


class _Arena:
    """One reused buffer for member data: indexing looks at headers, not at payloads."""

    def __init__(self) -> None:
        self.buf = bytearray(0)

    def alloc(self, n: int) -> memoryview:
        if n > len(self.buf):
            self.buf = bytearray(n)
        return memoryview(self.buf)[:n]


def shard_index(url: str, **storage_options: Any) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """``(offsets, keys)`` of the shard at ``url``: each sample's first byte, then where the
    last sample ends; and each sample's key.

    Raises:
        ShardReadError: naming the shard for a damaged tar or consecutive duplicate keys.
    """
    offsets, keys, end, arena = [], [], 0, _Arena()
    with fsspec.open(url, "rb", **storage_options) as f:
        for key, _, span in iter_sample_spans(f, shard=url, alloc=arena.alloc):
            offsets.append(span.begin)
            keys.append(key)
            end = span.end
    return (*offsets, end), tuple(keys)


def index_dataset(url: str, *, force: bool = False, **storage_options: Any) -> Manifest:
    """Adds an index to every shard of the manifest at ``url`` that lacks one (all with
    ``force``), checks the sample counts, and saves the manifest.

    Raises:
        ManifestError: naming the shard when its sample count differs from the manifest's.
        LoffError: the error of a shard that cannot be read (nothing is saved then).
    """
    manifest = Manifest.load(url, **storage_options)
    shards = []
    for info, shard_url in zip(manifest.shards, manifest.shard_urls(url)):
        if info.indexed and not force:
            shards.append(info)
            continue
        offsets, keys = shard_index(shard_url, **storage_options)
        if len(keys) != info.samples:
            raise ManifestError(f"shard {shard_url!r} holds {len(keys)} samples, manifest says {info.samples}")
        shards.append(dataclasses.replace(info, offsets=offsets, keys=keys))
    manifest.shards = shards
    Manifest.from_dict(manifest.to_dict(), where=repr(url))  # the index passes the reader's checks
    manifest.save(url, **storage_options)
    return manifest
