"""Shard indexes: where each sample of a shard starts, and its key.

The writer records the index while it writes (:class:`~loffdata.format.writer.ShardWriter`);
:func:`index_dataset` computes it for shards written by anything else (``loffdata index
DIR``), by reading every shard once, and writes it as sidecars
(:mod:`loffdata.format.shardindex`). Readers use an index for random access
(:mod:`loffdata.stream.scatter`) and check every key they read against it.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
from typing import Any

import fsspec

from loffdata.errors import LoffError, ManifestError
from loffdata.format.manifest import Manifest, ShardInfo, manifest_url
from loffdata.format.shardindex import ShardIndex, index_name
from loffdata.format.tar import iter_sample_spans
from loffdata.format.writer import write_sidecar
from loffdata.protocols import of_url
from loffdata.safeio import open_binary
from loffdata.util import is_local

__all__ = ["shard_index", "index_dataset", "check_writable", "remove_temporaries"]


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
    with open_binary(url, what="shard", **storage_options) as f:  # local: regular files only
        for key, _, span in iter_sample_spans(f, shard=url, alloc=arena.alloc):
            offsets.append(span.begin)
            keys.append(key)
            end = span.end
    return (*offsets, end), tuple(keys)


def index_dataset(url: str, *, force: bool = False, **storage_options: Any) -> Manifest:
    """Writes the index sidecar (``shard-000001.idx``, see ``docs/format.md``) of every shard
    of the manifest at ``url`` that lacks one (all with ``force``), checks the sample counts,
    and saves the manifest, which then names the sidecars. An old manifest's inline index is
    moved into sidecars as it is (``force`` computes it again from the shards). Temporaries
    that an interrupted run left are removed first.

    Raises:
        ManifestError: naming the shard when its sample count differs from the manifest's.
        LoffError: the error of a shard that cannot be read (nothing is saved then); up front
            for a dataset read over HTTP, which cannot be written; a manifest that cannot be
            written (read-only directory) names it.
    """
    check_writable(url)
    manifest = Manifest.load(url, **storage_options)
    fs, root = fsspec.core.url_to_fs(posixpath.dirname(manifest_url(str(url))), **storage_options)
    remove_temporaries(fs, root)
    indexes = [
        _new_index(info, shard_url, force, storage_options)
        for info, shard_url in zip(manifest.shards, manifest.shard_urls(url))
    ]
    manifest.shards = _with_sidecars(fs, root, manifest.shards, indexes)
    Manifest.from_dict(manifest.to_dict(), where=repr(url))  # the index passes the reader's checks
    try:
        manifest.save(url, **storage_options)
    except OSError as err:
        raise LoffError(
            f"cannot write the manifest of {url!r} ({type(err).__name__}: {err.strerror or err}): "
            "index needs a writable dataset; copy it somewhere writable first"
        ) from None
    return manifest


def _new_index(
    info: ShardInfo, shard_url: str, force: bool, storage_options: dict[str, Any]
) -> ShardIndex | None:
    """The index to write for a shard: none while its sidecar stands, else its inline index,
    else one computed from the shard (``force``: always computed)."""
    if info.index_file is not None and info.offsets is None and not force:
        return None
    if info.index is not None and not force:
        return info.index
    return _computed(shard_url, info, storage_options)


def _with_sidecars(
    fs: Any, root: str, shards: list[ShardInfo], indexes: list[ShardIndex | None]
) -> list[ShardInfo]:
    """Writes the sidecar of each shard with a new index (once every shard was read); the
    shards' entries, naming them."""
    out = []
    for info, index in zip(shards, indexes):
        if index is not None:
            data = index.to_bytes(shard_bytes=info.bytes, sha256=info.sha256)
            write_sidecar(fs, f"{root.rstrip('/')}/{index_name(info.name)}", data)
            info = dataclasses.replace(
                info, offsets=None, keys=None, index_file=index_name(info.name)
            )
        out.append(info)
    return out


def remove_temporaries(fs: Any, root: str) -> list[str]:
    """Removes the sidecar temporaries (``.shard-000001.idx.tmp-*``) that an index run killed
    while writing left in ``root``; returns their paths."""
    found = fs.glob(f"{root.rstrip('/')}/.*.idx.tmp-*")
    for path in found:
        fs.rm(path)
    return found


def _computed(shard_url: str, info: ShardInfo, storage_options: dict[str, Any]) -> ShardIndex:
    offsets, keys = shard_index(shard_url, **storage_options)
    if len(keys) != info.samples:
        raise ManifestError(
            f"shard {shard_url!r} holds {len(keys)} samples, manifest says {info.samples}"
        )
    where = f"shard {shard_url!r}: index"
    return ShardIndex.from_lists(offsets, keys, where=where).check(
        samples=info.samples, shard_bytes=info.bytes, where=where
    )


def check_writable(url: str) -> None:
    """Refuses, before any shard is read, a dataset that the index could not be saved to."""
    if not (protocol := of_url(str(url))).writable:
        raise LoffError(
            f"{url!r}: index needs a writable local dataset (or an object store); "
            f"{protocol.names[0].upper()} cannot be written: copy the dataset to local disk, "
            "index it there, and publish its manifest.json"
        )
    if is_local(url):
        folder = os.path.dirname(manifest_url(str(url)).removeprefix("file://")) or "."
        if os.path.isdir(folder) and not os.access(folder, os.W_OK):
            raise LoffError(f"{folder!r} is read-only: index needs a writable local dataset")
