"""Shard writing: samples -> tar shards bounded by sample count and bytes -> manifest.

Shards go to a local directory or any fsspec URL (``s3://`` included). A shard becomes
visible only when complete: on local-like filesystems it is written under a temporary name
and renamed on close; on object stores (S3, GCS, Azure) an object is invisible until its
upload completes, so it is written in place. A crash never leaves a partial shard under a
final name.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import tarfile
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np

from loffdata.errors import SampleError
from loffdata.format import codec
from loffdata.format.manifest import Manifest, ShardInfo, TensorSpec, shard_record
from loffdata.format.names import check_prefix
from loffdata.format.sample import encode_sample
from loffdata.format.shardindex import ShardIndex, index_name
from loffdata.format.stats import ChannelStats
from loffdata.protocols import of_filesystem

__all__ = [
    "WriterConfig",
    "ShardWriter",
    "write_dataset",
    "shard_name",
    "write_sidecar",
    "NONFINITE_RULES",
]

#: what the writer does with NaN or infinite features (``WriterConfig.nonfinite``)
NONFINITE_RULES = ("refuse", "zero")


def shard_name(prefix: str, index: int) -> str:
    """The file name of shard ``index``: ``{prefix}-{index:06d}.tar``."""
    return f"{prefix}-{index:06d}.tar"


def write_sidecar(fs: Any, path: str, data: bytes) -> None:
    """Writes a shard's index sidecar at ``path``: under a temporary name then renamed, or in
    place on object stores (where an object appears only once complete)."""
    if of_filesystem(fs).atomic_writes:
        fs.pipe_file(path, data)
        return
    root, name = posixpath.split(path)
    tmp = f"{root}/.{name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with fs.open(tmp, "wb") as f:
            f.write(data)
        fs.mv(tmp, path)
    except BaseException:  # interrupted (Ctrl-C too) or failed: no temporary is left
        if fs.exists(tmp):
            fs.rm(tmp)
        raise


@dataclass(frozen=True)
class WriterConfig:
    """Where and how shards are written.

    Attributes:
        prefix: shard file name prefix (distinct per writer when several write one dataset).
        max_samples: most samples per shard.
        max_bytes: a shard is closed once it holds at least this many bytes.
        dtype: storage dtype of the features (``None`` keeps the input dtype).
        start_index: number of the first shard (to continue after existing shards).
        nonfinite: what happens to features holding NaN or infinity (also after conversion
            to the storage dtype, e.g. float32 beyond float16's range): ``"refuse"`` raises
            a :class:`~loffdata.errors.SampleError` naming the sample; ``"zero"`` stores
            them as 0 (and counts them in :attr:`ShardWriter.zeroed`). Statistics and the
            manifest then never hold NaN.
    """

    prefix: str = "shard"
    max_samples: int = 1000
    max_bytes: int = 1 << 30
    dtype: str | None = "float16"
    start_index: int = 0
    nonfinite: str = "refuse"

    def __post_init__(self) -> None:
        if self.nonfinite not in NONFINITE_RULES:
            raise ValueError(f"nonfinite must be one of {NONFINITE_RULES}, got {self.nonfinite!r}")
        check_prefix(self.prefix)  # shards stay in the writer's directory


class _HashingWriter(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through it."""

    def __init__(self, f: Any):
        self._f, self.sha256, self.nbytes = f, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.nbytes

    def write(self, b: Any) -> int:
        self.sha256.update(b)
        self.nbytes += len(b)
        self._f.write(b)
        return len(b)


class _OpenShard:
    """One shard being written: the tar stream, its target and the running totals."""

    def __init__(self, fs: Any, root: str, name: str):
        self.fs, self.name, self.samples = fs, name, 0
        self.path = f"{root}/{name}"
        atomic_in_place = of_filesystem(fs).atomic_writes
        self.tmp = self.path if atomic_in_place else f"{root}/.{name}.tmp-{uuid.uuid4().hex[:8]}"
        self.file = fs.open(self.tmp, "wb")
        self.hasher = _HashingWriter(self.file)
        self.tar = tarfile.open(fileobj=self.hasher, mode="w", format=tarfile.USTAR_FORMAT)
        #: the shard's index: where each sample starts, and each sample's key
        self.offsets: list[int] = []
        self.keys: list[str] = []

    def add(self, key: str, members: list[tuple[str, bytes]]) -> None:
        if self.keys and self.keys[-1] == key:
            raise ValueError(
                f"sample key {key!r} repeats the previous sample's: consecutive keys must differ"
            )
        self.offsets.append(self.tar.offset)
        self.keys.append(key)
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            self.tar.addfile(info, io.BytesIO(data))
        self.samples += 1

    def commit(self) -> ShardInfo:
        end = self.tar.offset  # where the last sample ends and the end-of-archive marker starts
        self.tar.close()
        self.file.close()
        if self.tmp != self.path:
            self.fs.mv(self.tmp, self.path)
        digest = self.hasher.sha256.hexdigest()
        index = ShardIndex.from_lists((*self.offsets, end), self.keys)
        sidecar = index_name(self.name)
        write_sidecar(
            self.fs,
            f"{posixpath.dirname(self.path)}/{posixpath.basename(sidecar)}",
            index.to_bytes(shard_bytes=self.hasher.nbytes, sha256=digest),
        )
        return ShardInfo(self.name, self.samples, self.hasher.nbytes, digest, index_file=sidecar)

    def abort(self) -> None:
        try:
            self.file.close()
        finally:
            if self.tmp != self.path and self.fs.exists(self.tmp):
                self.fs.rm(self.tmp)


class ShardWriter:
    """Streams samples into tar shards; use as a context manager.

    Example:
        >>> with ShardWriter("out/train", WriterConfig(max_samples=100)) as w:
        ...     w.write("img-000001", features, label=3)
        >>> w.shards  # committed ShardInfo list

    On a clean exit the open shard is committed; on an exception it is discarded.
    Per-channel statistics of the features (as written, before storage conversion)
    accumulate in :attr:`stats`.
    """

    def __init__(self, url: str, config: WriterConfig | None = None, **storage_options: Any):
        self.config = config or WriterConfig()
        self.fs, self.root = fsspec.core.url_to_fs(str(url), **storage_options)
        self.root = self.root.rstrip("/")
        self.fs.makedirs(self.root, exist_ok=True)
        self.shards: list[ShardInfo] = []
        self.stats = ChannelStats()
        self.feature_spec: TensorSpec | None = None
        self.extra_specs: dict[str, TensorSpec] = {}
        self._open: _OpenShard | None = None
        self._next_index = self.config.start_index
        #: non-finite feature values stored as 0 (``nonfinite="zero"``)
        self.zeroed = 0

    def write(
        self,
        key: str,
        features: Any,
        *,
        label: int | None = None,
        extras: Mapping[str, Any] | None = None,
    ) -> None:
        """Writes one sample; ``features`` is (C, H, W), array or tensor."""
        arr = self._finite(key, codec.as_numpy(features))
        members = encode_sample(key, arr, label=label, extras=extras, dtype=self.config.dtype)
        self._note_specs(arr, extras)
        shard = self._shard()
        shard.add(key, members)
        self.stats.update(arr.astype(np.float32, copy=False), channel_axis=0)
        if shard.samples >= self.config.max_samples or shard.hasher.nbytes >= self.config.max_bytes:
            self._commit()

    def _finite(self, key: str, arr: np.ndarray) -> np.ndarray:
        """``arr``, checked (or zeroed) by the ``nonfinite`` rule, in the storage dtype too."""
        if arr.dtype.kind != "f" and codec.dtype_name(arr) != "bfloat16":
            return arr
        with np.errstate(over="ignore"):  # overflow to infinity is what is looked for
            stored = (
                arr
                if self.config.dtype in (None, "int8")
                else arr.astype(codec.DTYPES[self.config.dtype])
            )
            bad = ~(
                np.isfinite(arr.astype(np.float32, copy=False))
                & np.isfinite(stored.astype(np.float32, copy=False))
            )
        if not bad.any():
            return arr
        if self.config.nonfinite == "refuse":
            name = self._open.name if self._open is not None else None
            where = f"{self.root}/{name or shard_name(self.config.prefix, self._next_index)}"
            raise SampleError(
                f"features hold {int(bad.sum())} non-finite values as "
                f"{self.config.dtype or arr.dtype} "
                "(NaN, infinity or beyond the storage dtype's range); "
                "WriterConfig(nonfinite='zero') stores them as 0",
                shard=where,
                key=key,
            )
        self.zeroed += int(bad.sum())
        return np.where(bad, np.zeros((), arr.dtype), arr)

    def _note_specs(self, arr: np.ndarray, extras: Mapping[str, Any] | None) -> None:
        dtype = self.config.dtype or _name_of(arr)
        spec = TensorSpec(tuple(arr.shape), dtype, "CHW")
        if self.feature_spec is None:
            self.feature_spec = spec
        elif spec != self.feature_spec:
            raise ValueError(f"features {spec} differ from the first sample's {self.feature_spec}")
        for name, value in (extras or {}).items():
            v = codec.as_numpy(value)
            self.extra_specs.setdefault(name, TensorSpec(tuple(v.shape), _name_of(v)))

    def _shard(self) -> _OpenShard:
        if self._open is None:
            self._open = _OpenShard(
                self.fs, self.root, shard_name(self.config.prefix, self._next_index)
            )
            self._next_index += 1
        return self._open

    def _commit(self) -> None:
        if self._open is not None:
            self.shards.append(self._open.commit())
            self._open = None

    def close(self) -> list[ShardInfo]:
        """Commits the open shard; returns all shards written."""
        self._commit()
        return self.shards

    def abort(self) -> None:
        """Discards the open shard (committed shards stay)."""
        if self._open is not None:
            self._open.abort()
            self._open = None

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def record(self) -> dict[str, Any]:
        """What was written, as JSON (:func:`~loffdata.format.manifest.shard_record`)."""
        return shard_record(self.shards, self.feature_spec, self.extra_specs, self.stats)

    def manifest(self, **fields: Any) -> Manifest:
        """A manifest of what was written; ``fields`` fill ``classes``, ``source`` etc."""
        return Manifest.from_records([self.record()], **fields)


def _name_of(arr: np.ndarray) -> str:
    name = codec.dtype_name(arr)
    if name is None:
        raise ValueError(f"unsupported dtype {arr.dtype}")
    return name


def write_dataset(
    url: str,
    samples: Iterable[tuple[str, Any, int | None]]
    | Iterable[tuple[str, Any, int | None, Mapping[str, Any]]],
    *,
    config: WriterConfig | None = None,
    classes: list[str] | None = None,
    source: dict[str, Any] | None = None,
    **storage_options: Any,
) -> Manifest:
    """Writes ``(key, features, label[, extras])`` tuples as shards plus ``manifest.json``.

    Returns the manifest, which is also saved at ``url/manifest.json``.
    """
    with ShardWriter(url, config, **storage_options) as writer:
        for item in samples:
            key, features, label, *rest = item
            writer.write(key, features, label=label, extras=rest[0] if rest else None)
    manifest = writer.manifest(classes=classes, source=dict(source or {}))
    manifest.save(url if "://" in str(url) else os.fspath(url), **storage_options)
    return manifest
