"""Where the shards are: a manifest, a directory, a brace pattern or a list of shard URLs.

:func:`resolve_source` turns any of them into a :class:`ShardSet` (URLs, per-shard sample
counts, byte sizes, tensor specs), which is all the epoch plan needs.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from loffdata.errors import LoffError, ManifestError, ShardReadError
from loffdata.format import codec
from loffdata.format.manifest import Manifest, TensorSpec, manifest_url
from loffdata.format.sample import decode_sample
from loffdata.format.tar import iter_sample_members
from loffdata.hints import check_dataset_dir
from loffdata.storage.remote import ResumableReader, RetryConfig, filesystem, is_local, open_shard

__all__ = ["ShardSet", "resolve_source", "load_manifest"]


@dataclass(frozen=True)
class ShardSet:
    """The shards of a dataset: URLs, sample counts, byte sizes and tensor specs."""

    urls: list[str]
    counts: list[int]
    sizes: list[int | None]
    features: TensorSpec
    extras: dict[str, TensorSpec] = field(default_factory=dict)

    @property
    def num_samples(self) -> int:
        return sum(self.counts)


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
    otherwise reads every shard once to count its samples (slow for remote data).
    """
    options, retry = dict(storage_options or {}), retry or RetryConfig()
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if not text.endswith(".tar") and "{" not in text:
            manifest = load_manifest(text, options, retry)
            return _from_manifest(
                manifest, manifest.shard_urls(text), [s.name for s in manifest.shards]
            )
        urls = _expand(text)
    else:
        urls = [os.fspath(u) for u in source]
    if not urls:
        raise ValueError("no shards given")
    return _from_sibling_manifest(urls, options, retry) or _scan(urls, options, retry)


def load_manifest(url: str, storage_options: dict[str, Any], retry: RetryConfig) -> Manifest:
    """:meth:`Manifest.load`, with remote reads retried like shard reads.

    Raises:
        ManifestError: naming the manifest URL when it is missing, unreachable or invalid.
    """
    murl = manifest_url(url)
    if is_local(murl):
        check_dataset_dir(url)  # one-line hint for a missing or parent dir
        return Manifest.load(murl)
    fs, path = filesystem(murl, storage_options, retry)
    try:
        data = ResumableReader(murl, fs, path, retry=retry).read()
    except ShardReadError as err:
        missing = isinstance(err.__cause__, FileNotFoundError)
        raise ManifestError(
            f"no manifest at {murl!r}" if missing else f"cannot read manifest {murl!r}: {err}"
        ) from None
    try:
        return Manifest.from_dict(json.loads(data), where=repr(murl))
    except json.JSONDecodeError as err:
        raise ManifestError(f"manifest {murl!r} is not valid JSON: {err}") from None


def _from_manifest(manifest: Manifest, urls: list[str], names: list[str]) -> ShardSet:
    by_name = {s.name: s for s in manifest.shards}
    infos = [by_name[n] for n in names]
    return ShardSet(
        urls,
        [s.samples for s in infos],
        [s.bytes for s in infos],
        manifest.features,
        dict(manifest.extras),
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
    return _from_manifest(manifest, urls, names)


def _scan(urls: list[str], options: dict[str, Any], retry: RetryConfig) -> ShardSet:
    counts, first = [], None
    for url in urls:
        with _open_any(url, options, retry) as f:
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


def _open_any(url: str, options: dict[str, Any], retry: RetryConfig) -> BinaryIO:
    if is_local(url):
        return open_shard(url)
    fs, path = filesystem(url, options, retry)
    return open_shard(url, fs=fs, path=path, retry=retry)


def _dtype_name(x: Any) -> str:
    if isinstance(x, codec.Quantized):
        return "int8"
    return next((n for n, dt in codec.DTYPES.items() if dt == x.dtype), str(x.dtype))


