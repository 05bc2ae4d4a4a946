"""The manifest: a JSON file beside the shards describing the whole dataset.

Schema (version 1) is specified in ``docs/format.md``. :meth:`Manifest.load` validates
everything it reads and raises :class:`~loffdata.errors.ManifestError` naming the file.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from loffdata.errors import ManifestError
from loffdata.format.codec import DTYPES
from loffdata.format.manifestchecks import MAX_SAMPLES, check_consistent, check_field_types
from loffdata.format.names import check_local_shards, check_shard_name
from loffdata.format.sample import FORMAT_NAME, FORMAT_VERSION
from loffdata.format.shardindex import END_MARKER, MIN_SAMPLE_BYTES, Keys, ShardIndex, index_name
from loffdata.format.stats import ChannelStats
from loffdata.safeio import brief, fetch_remote, loads_json, read_regular
from loffdata.util import write_json

__all__ = [
    "MANIFEST_NAME",
    "MAX_SAMPLES",
    "ShardInfo",
    "TensorSpec",
    "Manifest",
    "manifest_url",
    "check_shard_name",
    "shard_record",
]

MANIFEST_NAME = "manifest.json"
#: Largest manifest read (2 GiB: ten million indexed samples take about 210 MB).
MAX_MANIFEST_BYTES = 1 << 31
_END_MARKER = END_MARKER


@dataclass(frozen=True)
class ShardInfo:
    """One shard: file name (relative to the manifest), samples, bytes and sha256.

    The shard's index (see ``docs/format.md``: each sample's first byte, then where the last
    one ends, and each sample's key) is either in a sidecar file, ``index_file`` (the
    current form: read lazily by the shards a process opens), or held here as ``offsets``
    (``uint64`` array, ``samples + 1`` values) and ``keys`` (a sequence of strings): an old
    manifest's inline index, converted once into that compact form.
    """

    name: str
    samples: int
    bytes: int
    sha256: str
    offsets: Any = field(default=None, compare=False, repr=False)
    keys: Any = field(default=None, compare=False, repr=False)
    index_file: str | None = None

    def __post_init__(self) -> None:  # lists (from JSON or the writer) become a compact index
        if self.offsets is None or self.keys is None:
            object.__setattr__(self, "offsets", None)
            object.__setattr__(self, "keys", None)
            return
        if isinstance(self.keys, Keys) and isinstance(self.offsets, np.ndarray):
            index = ShardIndex(self.offsets, self.keys._starts, self.keys._blob)
        else:
            index = ShardIndex.from_lists(
                list(self.offsets), list(self.keys), where=f"shard {self.name!r}: index"
            )
        object.__setattr__(self, "offsets", index.offsets)
        object.__setattr__(self, "keys", index.keys)

    @property
    def indexed(self) -> bool:
        """Whether the shard has an index (in a sidecar or held here)."""
        return self.index_file is not None or self.offsets is not None

    @property
    def index(self) -> ShardIndex | None:
        """The index held here (``None`` if there is none or it is in a sidecar)."""
        return (
            None
            if self.offsets is None
            else ShardIndex(self.offsets, self.keys._starts, self.keys._blob)
        )

    def to_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "samples": self.samples, "bytes": self.bytes, "sha256": self.sha256}
        if self.offsets is not None:  # an index held in memory is written inline (the old form)
            d["index"] = {"offsets": self.offsets.tolist(), "keys": list(self.keys)}
        elif self.index_file is not None:
            d["index"] = {"file": self.index_file}
        return d


@dataclass(frozen=True)
class TensorSpec:
    """Shape and storage dtype of a tensor member; ``layout`` is ``"CHW"`` for features."""

    shape: tuple[int, ...]
    dtype: str
    layout: str | None = None


@dataclass
class Manifest:
    """Everything a reader needs to know about a dataset of shards."""

    shards: list[ShardInfo]
    features: TensorSpec
    classes: list[str] | None = None
    extras: dict[str, TensorSpec] = field(default_factory=dict)
    stats: ChannelStats | None = None
    source: dict[str, Any] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    format: str = FORMAT_NAME
    version: int = FORMAT_VERSION

    @property
    def num_samples(self) -> int:
        return sum(s.samples for s in self.shards)

    @property
    def num_bytes(self) -> int:
        return sum(s.bytes for s in self.shards)

    @property
    def num_classes(self) -> int | None:
        return None if self.classes is None else len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        d = {
            "format": self.format,
            "version": self.version,
            "num_samples": self.num_samples,
            "features": _spec_dict(self.features),
            "classes": self.classes,
            "extras": {k: _spec_dict(v) for k, v in self.extras.items()},
            "stats": self.stats.to_dict() if self.stats is not None else None,
            "source": self.source,
            "skipped": self.skipped,
            "shards": [s.to_dict() for s in self.shards],
        }
        return d

    @classmethod
    def from_records(cls, records: Iterable[dict[str, Any]], **fields: Any) -> Manifest:
        """The one way a manifest is built from what writers recorded (:func:`shard_record`;
        writers, ``loffdata-shard``, ``loffdata convert`` and ``loffdata manifest`` use it).

        Args:
            records: :func:`shard_record` dicts (JSON-able); those without features (nothing
                written) are left out. Shards are listed in record order, statistics merged,
                specs taken from the first.
            fields: the other fields (``classes``, ``source``, ``skipped``, ...).

        Raises:
            ValueError: if no record holds a sample.
        """
        used = [r for r in records if r.get("features") is not None]
        if not used:
            raise ValueError("no sample was written, so there is no feature spec")
        stats = ChannelStats()
        for r in used:
            d = r["stats"]
            stats.merge(ChannelStats(int(d["count"]), np.asarray(d["mean"]), np.asarray(d["m2"])))
        return cls(
            shards=[ShardInfo(**s) for r in used for s in r.get("shards", [r.get("shard")])],
            features=_record_spec(used[0]["features"], "CHW"),
            extras={k: _record_spec(v) for k, v in used[0]["extras"].items()},
            stats=stats,
            **fields,
        )

    @classmethod
    def from_dict(cls, d: Any, *, where: str = "<dict>") -> Manifest:
        """Builds and validates a manifest; errors name ``where``."""
        try:
            return _parse(d)
        except ManifestError as err:
            raise ManifestError(f"invalid manifest {where}: {err}") from None
        except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as err:
            raise ManifestError(
                f"invalid manifest {where}: {type(err).__name__}: {brief(err)[:300]}"
            ) from None
        except RecursionError:
            raise ManifestError(f"invalid manifest {where}: nested too deeply") from None

    @classmethod
    def from_bytes(cls, data: bytes, *, where: str) -> Manifest:
        """Parses a manifest file's bytes: strict UTF-8 JSON (no ``NaN``), bounded depth.

        Raises:
            ManifestError: naming ``where``.
        """
        if len(data) > MAX_MANIFEST_BYTES:
            raise ManifestError(
                f"manifest {where} is {len(data)} bytes, more than {MAX_MANIFEST_BYTES}"
            )
        try:
            d = loads_json(data, where=f"manifest {where}")
        except ValueError as err:
            raise ManifestError(str(err)) from None
        return cls.from_dict(d, where=where)

    def save(self, url: str, **storage_options: Any) -> str:
        """Writes the manifest (atomically on local disk) to ``url`` or ``url/manifest.json``."""
        url = manifest_url(url)
        write_json(url, self.to_dict(), **storage_options)
        return url

    @classmethod
    def load(cls, url: str, **storage_options: Any) -> Manifest:
        """Reads a manifest from a file URL, or from ``manifest.json`` in a directory URL."""
        url = manifest_url(url)
        try:
            data = _read_manifest(url, storage_options)
        except FileNotFoundError:
            raise ManifestError(f"no manifest at {url!r}") from None
        except OSError as err:  # a FIFO, a device, too large, unreadable
            raise ManifestError(f"cannot read manifest {url!r}: {err}") from None
        return cls.from_bytes(data, where=repr(url))

    def shard_urls(self, base: str) -> list[str]:
        """Absolute URLs of the shards for a manifest stored at (or in) ``base``.

        Raises:
            ManifestError: for a local shard that resolves outside the manifest's directory
                (a symlink to a shard of another dataset, or to a device).
        """
        root = posixpath.dirname(manifest_url(base))
        urls = [f"{root}/{check_shard_name(s.name)}" for s in self.shards]
        if "://" not in root or root.startswith("file://"):
            check_local_shards(urls, root.removeprefix("file://") or ".")
        return urls


def _read_manifest(url: str, storage_options: dict[str, Any]) -> bytes:
    if "://" not in url or url.startswith("file://"):
        return read_regular(url.removeprefix("file://"), limit=MAX_MANIFEST_BYTES, what="manifest")
    got = fetch_remote([url], limit=MAX_MANIFEST_BYTES, **storage_options)[0]  # one GET
    if isinstance(got, Exception):
        raise got
    return got


def manifest_url(url: str) -> str:
    """``url`` itself if it names a ``.json`` file, else ``url/manifest.json``."""
    url = str(url)
    return url if url.endswith(".json") else url.rstrip("/") + "/" + MANIFEST_NAME


def shard_record(
    shards: Iterable[ShardInfo],
    features: TensorSpec | None,
    extras: dict[str, TensorSpec],
    stats: ChannelStats,
) -> dict[str, Any]:
    """What a writer knows of the shards it wrote, as JSON (``loffdata-shard`` and ``loffdata
    convert`` keep one per shard beside it until the manifest is built from them)."""
    return {
        "shards": [asdict(s) for s in shards],
        "features": None if features is None else _spec_dict(features),
        "extras": {k: _spec_dict(v) for k, v in extras.items()},
        "stats": {"count": stats.count, "mean": stats.mean.tolist(), "m2": stats.m2.tolist()},
    }


def _record_spec(d: dict[str, Any], layout: str | None = None) -> TensorSpec:
    return TensorSpec(tuple(d["shape"]), d["dtype"], d.get("layout", layout))


def _spec_dict(spec: TensorSpec) -> dict[str, Any]:
    d = {"shape": list(spec.shape), "dtype": spec.dtype}
    if spec.layout is not None:
        d["layout"] = spec.layout
    return d


def _parse_spec(d: Any, what: str) -> TensorSpec:
    if not isinstance(d, dict) or d.get("dtype") not in DTYPES:
        raise ManifestError(f"{what}: needs a known 'dtype', got {brief(d)}")
    shape = d.get("shape")
    if not isinstance(shape, list) or not all(isinstance(x, int) and x >= 0 for x in shape):
        raise ManifestError(
            f"{what}: 'shape' must be a list of non-negative ints, got {brief(shape)}"
        )
    return TensorSpec(shape=tuple(shape), dtype=d["dtype"], layout=d.get("layout"))


def _parse_shard(d: Any) -> ShardInfo:
    if not isinstance(d, dict):
        raise ManifestError(f"shard entry {brief(d)} is not an object")
    try:
        name = check_shard_name(d["name"])
    except ManifestError as err:
        raise ManifestError(f"bad shard entry: {err}") from None
    info = ShardInfo(
        name=name, samples=int(d["samples"]), bytes=int(d["bytes"]), sha256=str(d["sha256"])
    )
    if info.samples < 0 or info.bytes < 0:
        raise ManifestError(f"bad shard entry {brief(d)}")
    if info.samples > MAX_SAMPLES or (
        info.samples and info.samples * MIN_SAMPLE_BYTES + _END_MARKER > info.bytes
    ):
        raise ManifestError(
            f"shard {name!r}: {info.samples} samples cannot fit in {info.bytes} bytes "
            f"(a sample takes at least {MIN_SAMPLE_BYTES})"
        )
    index = d.get("index")
    if index is None:
        return info
    if isinstance(index, dict) and "file" in index:
        sidecar = name[:-4] + ".idx" if name.endswith(".tar") else index_name(name)
        if index["file"] != sidecar:
            raise ManifestError(f"shard {name!r}: index file {index['file']!r} is not {sidecar!r}")
        object.__setattr__(info, "index_file", sidecar)  # built once: this runs per shard
        return info
    offsets, keys = _parse_index(index, info)
    return ShardInfo(info.name, info.samples, info.bytes, info.sha256, offsets, keys)


def _parse_index(index: Any, info: ShardInfo) -> tuple[np.ndarray, Keys]:
    """The validated offsets and keys of a shard's inline index (the old form)."""
    where = f"shard {info.name!r}: index"
    if (
        not isinstance(index, dict)
        or not isinstance(index.get("offsets"), list)
        or not isinstance(index.get("keys"), list)
    ):
        raise ManifestError(f"{where} must hold lists 'offsets' and 'keys' (or name a 'file')")
    offsets, keys = index["offsets"], index["keys"]
    if len(offsets) != info.samples + 1 or len(keys) != info.samples:
        raise ManifestError(
            f"{where} has {len(offsets)} offsets and {len(keys)} keys for {info.samples} samples"
        )
    compact = ShardIndex.from_lists(offsets, keys, where=where).check(
        samples=info.samples, shard_bytes=info.bytes, where=where
    )
    return compact.offsets, compact.keys


def _parse(d: Any) -> Manifest:
    if not isinstance(d, dict):
        raise ManifestError("top level is not a JSON object")
    if d.get("format") != FORMAT_NAME:
        raise ManifestError(f"'format' is {brief(d.get('format'))}, expected {FORMAT_NAME!r}")
    if d.get("version") != FORMAT_VERSION:
        raise ManifestError(
            f"unsupported version {brief(d.get('version'))} (this loffdata reads {FORMAT_VERSION})"
        )
    check_field_types(d)
    features = _parse_spec(d["features"], "features")
    m = Manifest(
        shards=[_parse_shard(s) for s in d["shards"]],
        features=features,
        classes=d.get("classes"),
        extras={k: _parse_spec(v, f"extras.{k}") for k, v in (d.get("extras") or {}).items()},
        stats=ChannelStats.from_dict(d["stats"]) if d.get("stats") else None,
        source=dict(d.get("source") or {}),
        skipped=list(d.get("skipped") or []),
    )
    check_consistent(m, d)
    return m
