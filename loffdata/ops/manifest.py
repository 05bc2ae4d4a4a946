"""A full manifest for shards from any tar writer (webdataset, GNU tar, another loffdata).

``loffdata index DIR|GLOB`` on shards without a ``manifest.json``: every shard is read once,
in name order, and every sample decoded (:func:`~loffdata.format.sample.decode_sample`, the
reader's checks). The first sample fixes the feature and extra specs and every other sample
is checked against them; the channel statistics are computed over all samples (int8
dequantised); the class names come from a file or list (:mod:`loffdata.format.classes`) or
from the label values; each shard's size and sha256 are those of the bytes read. The
manifest is written next to the shards (the directory, or the folder holding every shard
of the glob), then each shard's index is added by :func:`~loffdata.format.index.index_dataset`.
"""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass, field
from typing import Any

import fsspec
import numpy as np

from loffdata.errors import ManifestError, SampleError
from loffdata.format import codec
from loffdata.format.classes import class_names
from loffdata.format.index import index_dataset
from loffdata.format.manifest import Manifest, ShardInfo, TensorSpec, shard_record
from loffdata.format.sample import Sample, decode_sample, features_match
from loffdata.format.stats import ChannelStats
from loffdata.format.tar import iter_sample_members

__all__ = ["build_manifest", "find_shards"]


class _Hashing:
    """A read-only file that hashes and counts every byte read through it (other attributes,
    ``fileno`` and ``size``, are the file's: the tar reader checks sizes with them)."""

    def __init__(self, f: Any) -> None:
        self.f, self.sha, self.count = f, hashlib.sha256(), 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.f, name)

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.sha.update(data)
        self.count += len(data)
        return data

    def readinto(self, buf: Any) -> int:
        n = self.f.readinto(buf)
        self.sha.update(memoryview(buf)[:n])
        self.count += n
        return n

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def find_shards(source: str, **storage_options: Any) -> tuple[str, list[str]]:
    """``(root, names)``: the ``*.tar`` files of directory ``source`` (or matching glob
    ``source``), names relative to ``root``, sorted; dot-names are never shards.

    Raises:
        ManifestError: nothing matches, or the matches are not below one folder.
    """
    fs, path = fsspec.core.url_to_fs(str(source), **storage_options)
    proto = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if fs.isdir(path):
        root, found = path.rstrip("/"), [p for p in fs.find(path, maxdepth=1) if p.endswith(".tar")]
    else:
        found = sorted(fs.glob(path))
        root = posixpath.commonpath([posixpath.dirname(p) for p in found]) if found else ""
    names = sorted(posixpath.relpath(p, root) for p in found)
    names = [n for n in names if not any(part.startswith(".") for part in n.split("/"))]
    if not names:
        raise ManifestError(f"no .tar shards at {source!r}")
    return (root if proto in ("file", "local") else f"{proto}://{root}"), names


@dataclass
class _Specs:
    """What the first sample fixed, and what every sample adds."""

    features: TensorSpec | None = None
    extras: dict[str, TensorSpec] = field(default_factory=dict)
    stats: ChannelStats = field(default_factory=ChannelStats)
    labels: set[int] = field(default_factory=set)
    labelled: set[bool] = field(default_factory=set)

    def add(self, s: Sample, shard: str) -> None:
        x = s.features
        if self.features is None:
            self.features = TensorSpec(
                tuple(int(d) for d in np.shape(x.values if isinstance(x, codec.Quantized) else x)),
                codec.dtype_name(x) or "",
                "CHW",
            )
            self.extras = {
                k: TensorSpec(tuple(np.shape(v)), codec.dtype_name(v) or "")
                for k, v in s.extras.items()
            }
        problem = features_match(x, self.features.shape, self.features.dtype)
        if problem:
            raise SampleError(
                f"{problem} (the first sample fixed the dataset's features)", shard=shard, key=s.key
            )
        if set(s.extras) != set(self.extras):
            raise SampleError(
                f"extras {sorted(s.extras)}, the first sample had {sorted(self.extras)}",
                shard=shard,
                key=s.key,
            )
        self.labelled.add(s.label is not None)
        if len(self.labelled) > 1:
            raise SampleError(
                "some samples have a label ('.cls') and some do not", shard=shard, key=s.key
            )
        if s.label is not None:
            self.labels.add(int(s.label))
        values = x.dequantize() if isinstance(x, codec.Quantized) else np.asarray(x)
        self.stats.update(values.astype(np.float32, copy=False), channel_axis=0)


def _read_shard(
    url: str, name: str, specs: _Specs, bar: Any, storage_options: dict[str, Any]
) -> ShardInfo:
    count = 0
    with fsspec.open(url, "rb", **storage_options) as raw:
        f = _Hashing(raw)
        for key, members in iter_sample_members(f, shard=url):
            specs.add(decode_sample(key, members, shard=url), url)
            count += 1
            bar.update(1)
        f.drain()
    return ShardInfo(name=name, samples=count, bytes=f.count, sha256=f.sha.hexdigest())


def _read_shards(
    root: str, names: list[str], specs: _Specs, progress: bool, storage_options: dict[str, Any]
) -> list[ShardInfo]:
    """Every shard read once, in order, its samples added to ``specs``, with a bar."""
    from tqdm.auto import tqdm

    with tqdm(unit="sample", desc="manifest", disable=not progress, dynamic_ncols=True) as bar:
        return [_read_shard(f"{root}/{n}", n, specs, bar, storage_options) for n in names]


def build_manifest(
    source: str,
    *,
    classes: Any = None,
    progress: bool = True,
    storage_options: dict[str, Any] | None = None,
) -> Manifest:
    """Writes ``manifest.json`` (with each shard's index) for the shards at ``source``.

    Args:
        source: a directory of ``.tar`` shards or a glob (local or any listable fsspec URL).
        classes: class names: a list, comma-separated names, or a file (see
            :mod:`loffdata.format.classes`); ``None``: the label values.
        progress: a tqdm bar over the samples read.
        storage_options: fsspec options.

    Raises:
        SampleError: naming the shard and key of a sample that does not decode or differs
            from the first one's specs.
        ManifestError: no shards, or labels outside the class names.
    """
    so = dict(storage_options or {})
    root, names = find_shards(source, **so)
    specs = _Specs()
    shards = _read_shards(root, names, specs, progress, so)
    if specs.features is None:
        raise ManifestError(f"the shards at {source!r} hold no samples")
    manifest = Manifest.from_records(
        [shard_record(shards, specs.features, specs.extras, specs.stats)],
        classes=class_names(classes, specs.labels),
        source={"kind": "foreign shards", "from": str(source)},
    )
    manifest.save(root, **so)
    return index_dataset(root, **so)
