"""Where the shards are: a manifest, a directory, a brace pattern or a list of shard URLs.

:func:`resolve_source` turns any of them into a :class:`ShardSet` (URLs, per-shard sample
counts, byte sizes, tensor specs), which is all the epoch plan needs.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from loffdata.errors import LoffError, ShardReadError
from loffdata.format import codec
from loffdata.format.manifest import Manifest, TensorSpec
from loffdata.format.names import first_duplicate, is_dot_file, url_identity
from loffdata.format.sample import decode_sample
from loffdata.format.tar import iter_sample_members
from loffdata.storage.retry import RetryConfig
from loffdata.storage.shardfile import open_shard
from loffdata.stream import discover
from loffdata.stream.discover import load_manifest
from loffdata.stream.indexes import ShardIndexes

__all__ = ["ShardSet", "resolve_source", "load_manifest"]


@dataclass(frozen=True)
class ShardSet:
    """The shards of a dataset: URLs, sample counts, byte sizes and tensor specs.

    Attributes:
        index: per shard, its index ``(offsets, keys)`` from the manifest, loaded lazily
            (:class:`~loffdata.stream.indexes.ShardIndexes`); ``None`` unless every shard
            has one.
        num_classes: the manifest's number of classes (labels must lie in ``[0, n)``), or
            ``None``.
        manifest: the manifest they were found with (classes, statistics), ``None`` for
            shards counted by reading them.
        sha256: per shard, the manifest's sha256 (what a cached copy must match), or ``None``.
    """

    urls: list[str]
    counts: list[int]
    sizes: list[int | None]
    features: TensorSpec
    extras: dict[str, TensorSpec] = field(default_factory=dict)
    index: Sequence[tuple[np.ndarray, Sequence[str]]] | None = None
    num_classes: int | None = None
    manifest: Manifest | None = None
    sha256: list[str | None] | None = None

    @property
    def num_samples(self) -> int:
        return sum(self.counts)

    @property
    def indexed(self) -> bool:
        """Whether every shard has an index (and can be read by random access)."""
        return self.index is not None

    def offsets(self) -> Sequence[np.ndarray]:
        """The index offsets of each shard as int64 arrays (a lazy sequence)."""
        if isinstance(self.index, ShardIndexes):
            return self.index.offsets()
        return [np.asarray(o, dtype=np.int64) for o, _ in self.index or []]

    def keys(self) -> Sequence[Sequence[str]]:
        """The index keys of each shard (a lazy sequence)."""
        if isinstance(self.index, ShardIndexes):
            return self.index.keys()
        return [k for _, k in self.index or []]


def _expand(source: str) -> list[str]:
    if "{" in source and ".." in source:
        from braceexpand import braceexpand

        return list(braceexpand(source))
    return [source]


def resolve_source(
    source: str | os.PathLike | Sequence[str],
    storage_options: dict[str, Any] | None = None,
    retry: RetryConfig | None = None,
) -> ShardSet:
    """Finds the shards and their sample counts for any supported source.

    A directory or ``.json`` URL is read as a manifest. A list of shard URLs or a brace
    pattern uses the ``manifest.json`` beside the shards when it lists all of them, and
    otherwise reads every shard once to count its samples (slow for remote data). A glob
    pattern (``dir/shard-*.tar``) is listed first (:mod:`loffdata.stream.discover`).
    """
    options, retry = dict(storage_options or {}), retry or RetryConfig()
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        globbed = discover.expand_glob(text, options, retry)  # dir/shard-*.tar
        if globbed is None and not text.endswith(".tar") and "{" not in text:
            manifest = discover.load_or_list(text, options, retry)
            return _from_manifest(
                manifest, manifest.shard_urls(text), [s.name for s in manifest.shards], options
            )
        urls = globbed if globbed is not None else _expand(text)
    else:
        urls = [os.fspath(u) for u in source]
    if not urls:
        raise ValueError("no shards given")
    _check_urls(urls)
    return _from_sibling_manifest(urls, options, retry) or _scan(urls, options, retry)


def _check_urls(urls: list[str]) -> None:
    """Refuses dot-files and one shard listed twice under two spellings (resolved first)."""
    dots = [u for u in urls if is_dot_file(u)]
    if dots:
        raise ShardReadError(f"{dots[0]!r} is a dot-file: names starting with '.' are never shards")
    dup = first_duplicate(urls, url_identity)
    if dup is not None:
        raise ShardReadError(
            f"shard {dup!r} is listed twice (as {url_identity(dup)!r}, after percent-decoding and "
            "dot-segment removal): it would be read twice"
        )


def _from_manifest(
    manifest: Manifest, urls: list[str], names: list[str], options: dict[str, Any]
) -> ShardSet:
    by_name = {s.name: s for s in manifest.shards}
    infos = (
        [by_name[n] for n in names]
        if names != [s.name for s in manifest.shards]
        else manifest.shards
    )
    indexed = all(s.indexed for s in infos)
    return ShardSet(
        urls,
        [s.samples for s in infos],
        [s.bytes for s in infos],
        manifest.features,
        dict(manifest.extras),
        index=ShardIndexes(urls, infos, options) if indexed else None,
        num_classes=manifest.num_classes,
        manifest=manifest,
        sha256=[s.sha256 or None for s in infos],
    )


def _from_sibling_manifest(
    urls: list[str], options: dict[str, Any], retry: RetryConfig
) -> ShardSet | None:
    root = posixpath.dirname(urls[0])
    if any(posixpath.dirname(u) != root for u in urls):
        return None
    try:
        manifest = load_manifest(root or ".", options, retry)
    except (LoffError, OSError):
        return None
    names = [posixpath.basename(u) for u in urls]
    if not set(names) <= {s.name for s in manifest.shards}:
        return None
    return _from_manifest(manifest, urls, names, options)


def _scan(urls: list[str], options: dict[str, Any], retry: RetryConfig) -> ShardSet:
    counts, first = [], None
    for url in urls:
        with open_shard(url, retry=retry, storage_options=options) as f:
            n = 0
            for key, members in iter_sample_members(f, shard=url):
                first = first or decode_sample(key, members, shard=url)
                n += 1
        counts.append(n)
    if first is None:
        raise ShardReadError(f"no samples in shards {urls[:3]!r}...")
    extras = {k: TensorSpec(tuple(v.shape), _dtype_name(v)) for k, v in first.extras.items()}
    spec = TensorSpec(tuple(first.features.shape), _dtype_name(first.features), "CHW")
    return ShardSet(urls, counts, [None] * len(urls), spec, extras)


def _dtype_name(x: Any) -> str:
    return codec.dtype_name(x) or str(x.dtype)
