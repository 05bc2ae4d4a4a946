"""Finding shards and datasets by listing: glob patterns and directories of datasets.

``dir/shard-*.tar`` (``*``, ``?``, ``[...]``) is expanded with fsspec's ``glob`` on any
filesystem that can list (local, ``s3://``, ``gs://`` ...); HTTP cannot list, so there a
brace pattern (``shard-{000000..000009}.tar``) or the manifest is the way. A directory
that holds no ``manifest.json`` but datasets in its subdirectories is answered with the
list of those datasets (:class:`DatasetDirectoryError`); mix them with
``MixedDataset(Mix.from_directory(url))`` (:mod:`loffdata.stream.mix`).
"""

from __future__ import annotations

import os
import posixpath
from typing import Any

from loffdata.errors import ManifestError, ShardReadError
from loffdata.format.manifest import MANIFEST_NAME, Manifest, manifest_url
from loffdata.format.names import is_dot_file
from loffdata.hints import check_dataset_dir
from loffdata.protocols import of_url
from loffdata.storage.retry import RetryConfig, with_retries
from loffdata.storage.shardfile import ResumableReader, filesystem, is_local

__all__ = [
    "GLOB_CHARS",
    "DatasetDirectoryError",
    "is_glob",
    "expand_glob",
    "find_datasets",
    "load_or_list",
]

GLOB_CHARS = "*?["


class DatasetDirectoryError(ManifestError):
    """A directory without a manifest that holds datasets: :attr:`datasets` lists their URLs."""

    def __init__(self, message: str, datasets: list[str]):
        super().__init__(message)
        self.datasets = datasets


def is_glob(text: str) -> bool:
    """Whether ``text`` is a glob pattern (has ``*``, ``?`` or ``[``)."""
    return any(c in text for c in GLOB_CHARS)


def _url_of(fs: Any, path: str, original: str) -> str:
    return path if is_local(original) and "://" not in original else fs.unstrip_protocol(path)


def expand_glob(
    text: str, storage_options: dict[str, Any] | None = None, retry: RetryConfig | None = None
) -> list[str] | None:
    """The sorted ``.tar`` URLs matching a glob pattern; ``None`` if ``text`` is not one.

    Dot-files (``.shard-000001.tar``, a writer's temporaries) never match: they are not shards.

    Raises:
        ValueError: for a pattern on a protocol that cannot list (HTTP(S),
            :mod:`loffdata.protocols`).
        ShardReadError: when nothing matches (naming the pattern).
    """
    if not is_glob(text) or (is_local(text) and os.path.exists(text)):
        return None  # a local name that merely contains "[" is taken as it is
    if not (protocol := of_url(text)).lists:
        raise ValueError(
            f"{text!r}: {protocol.names[0].upper()} servers cannot be listed, so glob patterns "
            "do not work there; "
            "use a brace pattern such as shard-{000000..000009}.tar, or the dataset's directory URL"
        )
    fs, path = filesystem(text, storage_options, retry or RetryConfig())
    matches = sorted(
        p for p in fs.glob(path) if p.endswith(".tar") and not is_dot_file(p)
    )  # never shards
    if not matches:
        raise ShardReadError(f"no .tar shards match {text!r}")
    return [_url_of(fs, p, text) for p in matches]


def find_datasets(
    url: str,
    storage_options: dict[str, Any] | None = None,
    retry: RetryConfig | None = None,
    *,
    depth: int = 2,
) -> list[str]:
    """URLs of the datasets (directories with a ``manifest.json``) below ``url``, sorted.

    Looks at most ``depth`` directory levels down (``url/a/manifest.json``,
    ``url/a/b/manifest.json``); ``url``'s own manifest is not included.
    """
    fs, root = filesystem(url, storage_options, retry or RetryConfig())
    root = root.rstrip("/")
    found: set[str] = set()
    for level in range(1, depth + 1):
        pattern = posixpath.join(root, *["*"] * level, MANIFEST_NAME)
        found.update(posixpath.dirname(p) for p in fs.glob(pattern))
    return [_url_of(fs, p, url) for p in sorted(found)]


def load_manifest(url: str, storage_options: dict[str, Any], retry: RetryConfig) -> Manifest:
    """:meth:`Manifest.load`, with remote reads retried like shard reads.

    Raises:
        ManifestError: naming the manifest URL when it is missing, unreachable or invalid.
    """
    murl = manifest_url(url)
    if is_local(murl):
        return Manifest.load(murl)
    fs, path = filesystem(murl, storage_options, retry)
    try:
        data = _read_whole(murl, fs, path, retry)
    except ShardReadError as err:
        missing = isinstance(err.__cause__, FileNotFoundError)
        why = str(err).replace(
            f"shard {murl!r}", "it"
        )  # the reader speaks of shards; this is the manifest
        raise ManifestError(
            f"no manifest at {murl!r}" if missing else f"cannot read manifest {murl!r}: {why}"
        ) from None
    return Manifest.from_bytes(data, where=repr(murl))


def _read_whole(url: str, fs: Any, path: str, retry: RetryConfig) -> bytes:
    """A remote file in one GET when it fits in a block (no size probe first: one round
    trip for a manifest of up to ``retry.block_size``); the rest, if any, resumably."""
    head = with_retries(
        lambda: fs.cat_file(path, start=0, end=retry.block_size), url=url, retry=retry
    )
    if len(head) < retry.block_size:
        return head
    rest = ResumableReader(url, fs, path, retry=retry)
    rest.seek(len(head))
    return head + rest.read()


def load_or_list(url: str, storage_options: dict[str, Any], retry: RetryConfig) -> Manifest:
    """The manifest of ``url``; a directory of datasets gets the list of them instead.

    Raises:
        DatasetDirectoryError: when ``url`` has no manifest but datasets below it, naming them.
    """
    try:
        return load_manifest(url, storage_options, retry)
    except ManifestError as err:
        if url.endswith(".json") or not of_url(url).lists:
            raise
        try:
            fs, path = filesystem(manifest_url(url), storage_options, retry)
            datasets = (
                [] if fs.exists(path) else find_datasets(url, storage_options, retry)
            )  # a bad manifest stays one
        except (OSError, ValueError):
            datasets = []
        if not datasets:
            if is_local(url):
                check_dataset_dir(url)  # one line: the directory is missing, or holds no dataset
            raise
        if is_local(url) and not os.path.isabs(url):  # named the way the user named the parent
            datasets = [os.path.relpath(d) for d in datasets]
        listing = "\n  ".join(datasets)
        raise DatasetDirectoryError(
            f"no dataset at {url!r} (no manifest.json); did you mean {datasets[0]!r}? "
            f"{url!r} holds "
            f"{len(datasets)} datasets:\n  {listing}\nopen one of them, or mix them: "
            "MixedDataset(Mix.from_directory(url)) (loffdata.stream.mix)",
            datasets,
        ) from err
