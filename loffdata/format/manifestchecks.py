"""The checks of a parsed manifest that look at more than one field: the JSON types of the
top-level fields, and what the fields say together (sample counts, classes, statistics'
channels, shard names listed twice once resolved). ``m`` is the
:class:`~loffdata.format.manifest.Manifest` being built."""

from __future__ import annotations

from typing import Any

from loffdata.errors import ManifestError
from loffdata.format.names import first_duplicate, resolve_name
from loffdata.safeio import brief

__all__ = ["MAX_SAMPLES", "check_field_types", "check_consistent"]

#: Most samples a manifest may declare (17 billion): more is taken for a damaged manifest.
MAX_SAMPLES = 1 << 34


#: field -> (JSON types it may have, what to write); ``None`` is allowed for optional fields.
_FIELD_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "shards": ((list,), "a list of shard objects"),
    "features": ((dict,), "an object with 'shape' and 'dtype'"),
    "classes": ((list, type(None)), "a list of strings or null"),
    "extras": ((dict, type(None)), "an object of name -> {shape, dtype}"),
    "stats": ((dict, type(None)), "an object or null"),
    "source": ((dict, type(None)), "an object"),
    "skipped": ((list, type(None)), "a list of objects"),
}


def check_field_types(d: dict) -> None:
    for name, (kinds, want) in _FIELD_TYPES.items():
        if name in d and not isinstance(d[name], kinds):
            raise ManifestError(
                f"field {name!r} must be {want}, got {type(d[name]).__name__} {brief(d[name])}"
            )
    if not all(isinstance(s, dict) for s in d.get("skipped") or []):
        raise ManifestError("field 'skipped' must be a list of objects (input, reason)")


def check_consistent(m: Any, d: dict) -> None:
    if "num_samples" in d and d["num_samples"] != m.num_samples:
        raise ManifestError(
            f"num_samples {d['num_samples']} != sum of shard samples {m.num_samples}"
        )
    if m.classes is not None and not (
        isinstance(m.classes, list) and all(isinstance(c, str) for c in m.classes)
    ):
        raise ManifestError("'classes' must be a list of strings")
    channels = m.features.shape[0] if m.features.shape else 0
    if m.stats is not None and m.stats.mean.shape != (channels,):
        raise ManifestError(f"stats have {m.stats.mean.size} channels, features have {channels}")
    dup = first_duplicate(s.name for s in m.shards)  # resolved: %2e/a.tar is a.tar on HTTP
    if dup is not None:
        raise ManifestError(
            f"duplicate shard names: {dup!r} is listed more than once (as {resolve_name(dup)!r}, "
            "after percent-decoding and dot-segment removal)"
        )
    if m.num_samples > MAX_SAMPLES:
        raise ManifestError(
            f"{m.num_samples} samples is more than a manifest may declare ({MAX_SAMPLES})"
        )
