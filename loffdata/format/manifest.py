"""The manifest: a JSON file beside the shards describing the whole dataset.

Schema (version 1) is specified in ``docs/format.md``. :meth:`Manifest.load` validates
everything it reads and raises :class:`~loffdata.errors.ManifestError` naming the file.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import asdict, dataclass, field
from typing import Any

import fsspec

from loffdata.errors import ManifestError
from loffdata.format.codec import DTYPES
from loffdata.format.sample import FORMAT_NAME, FORMAT_VERSION
from loffdata.format.stats import ChannelStats
from loffdata.util import write_json

__all__ = ["MANIFEST_NAME", "ShardInfo", "TensorSpec", "Manifest", "manifest_url"]

MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class ShardInfo:
    """One shard: file name (relative to the manifest), samples, bytes and sha256."""

    name: str
    samples: int
    bytes: int
    sha256: str


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
            "shards": [asdict(s) for s in self.shards],
        }
        return d

    @classmethod
    def from_dict(cls, d: Any, *, where: str = "<dict>") -> Manifest:
        """Builds and validates a manifest; errors name ``where``."""
        try:
            return _parse(d)
        except ManifestError as err:
            raise ManifestError(f"invalid manifest {where}: {err}") from None
        except (KeyError, TypeError, ValueError) as err:
            raise ManifestError(f"invalid manifest {where}: {type(err).__name__}: {err}") from None

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
            with fsspec.open(url, "r", **storage_options) as f:
                d = json.load(f)
        except FileNotFoundError:
            raise ManifestError(f"no manifest at {url!r}") from None
        except json.JSONDecodeError as err:
            raise ManifestError(f"manifest {url!r} is not valid JSON: {err}") from None
        return cls.from_dict(d, where=repr(url))

    def shard_urls(self, base: str) -> list[str]:
        """Absolute URLs of the shards for a manifest stored at (or in) ``base``."""
        root = posixpath.dirname(manifest_url(base))
        return [f"{root}/{s.name}" for s in self.shards]


def manifest_url(url: str) -> str:
    """``url`` itself if it names a ``.json`` file, else ``url/manifest.json``."""
    url = str(url)
    return url if url.endswith(".json") else url.rstrip("/") + "/" + MANIFEST_NAME




def _spec_dict(spec: TensorSpec) -> dict[str, Any]:
    d = {"shape": list(spec.shape), "dtype": spec.dtype}
    if spec.layout is not None:
        d["layout"] = spec.layout
    return d


def _parse_spec(d: Any, what: str) -> TensorSpec:
    if not isinstance(d, dict) or d.get("dtype") not in DTYPES:
        raise ManifestError(f"{what}: needs a known 'dtype', got {d!r}")
    shape = d.get("shape")
    if not isinstance(shape, list) or not all(isinstance(x, int) and x >= 0 for x in shape):
        raise ManifestError(f"{what}: 'shape' must be a list of non-negative ints, got {shape!r}")
    return TensorSpec(shape=tuple(shape), dtype=d["dtype"], layout=d.get("layout"))


def _parse_shard(d: Any) -> ShardInfo:
    if not isinstance(d, dict):
        raise ManifestError(f"shard entry {d!r} is not an object")
    info = ShardInfo(name=d["name"], samples=int(d["samples"]), bytes=int(d["bytes"]), sha256=str(d["sha256"]))
    bad_name = not info.name or info.name.startswith("/") or ".." in info.name.split("/")
    if bad_name or info.samples < 0 or info.bytes < 0:
        raise ManifestError(f"bad shard entry {d!r}")
    return info


def _parse(d: Any) -> Manifest:
    if not isinstance(d, dict):
        raise ManifestError("top level is not a JSON object")
    if d.get("format") != FORMAT_NAME:
        raise ManifestError(f"'format' is {d.get('format')!r}, expected {FORMAT_NAME!r}")
    if d.get("version") != FORMAT_VERSION:
        raise ManifestError(f"unsupported version {d.get('version')!r} (this loffdata reads {FORMAT_VERSION})")
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
    _check_consistent(m, d)
    return m


def _check_consistent(m: Manifest, d: dict) -> None:
    if "num_samples" in d and d["num_samples"] != m.num_samples:
        raise ManifestError(f"num_samples {d['num_samples']} != sum of shard samples {m.num_samples}")
    if m.classes is not None and not (isinstance(m.classes, list) and all(isinstance(c, str) for c in m.classes)):
        raise ManifestError("'classes' must be a list of strings")
    channels = m.features.shape[0] if m.features.shape else 0
    if m.stats is not None and m.stats.mean.shape != (channels,):
        raise ManifestError(f"stats have {m.stats.mean.size} channels, features have {channels}")
    names = [s.name for s in m.shards]
    if len(set(names)) != len(names):
        raise ManifestError("duplicate shard names")
