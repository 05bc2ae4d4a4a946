"""The manifest of a split, built by rank 0 from all shard sidecars (statistics merged)."""

from __future__ import annotations

import math
from typing import Any

from loffdata.errors import LoffError
from loffdata.extract.jsonio import jsonable, read_json, write_json
from loffdata.extract.runtime import Runtime
from loffdata.extract.sink import sidecar_name
from loffdata.format.manifest import Manifest

__all__ = ["finalize_split"]


def finalize_split(rt: Runtime, split: str) -> Manifest:
    """Builds and saves ``<out>/<split>/manifest.json`` from all shard sidecars."""
    cfg, folder = rt.config, f"{rt.root}/{split}"
    num_shards = math.ceil(len(rt.source.splits[split]) / cfg.shard_size)
    rt.fs.invalidate_cache()
    missing = [
        j for j in range(num_shards) if not rt.fs.exists(f"{folder}/{sidecar_name(cfg.prefix, j)}")
    ]
    if missing:
        raise LoffError(
            f"split {split!r} at {cfg.out!r}: shards {missing[:10]} are incomplete; run again to "
            "resume"
        )
    sidecars = [
        read_json(rt.fs, f"{folder}/{sidecar_name(cfg.prefix, j)}") for j in range(num_shards)
    ]
    _check_weights(rt, split, sidecars)
    with_data = [s for s in sidecars if s["features"] is not None]
    if not with_data:
        raise LoffError(f"split {split!r}: no image could be read, nothing was written")
    manifest = Manifest.from_records(
        with_data,
        classes=rt.source.classes,
        source=_source_info(rt, split),
        skipped=[item for s in sidecars for item in s["skipped"]],
    )
    write_json(rt.fs, f"{folder}/manifest.json", manifest.to_dict())
    return manifest


def _check_weights(rt: Runtime, split: str, sidecars: list[dict[str, Any]]) -> None:
    """Refuses to merge shards written by a model with other weights (another rank, a resumed
    run)."""
    other = [s["index"] for s in sidecars if s.get("weights_sha256", rt.weights) != rt.weights]
    if other:
        raise LoffError(
            f"split {split!r} at {rt.config.out!r}: shards {other[:10]} were written by a model "
            "with "
            f"other weights than this run's (sha256 {rt.weights[:12]}...); every rank and every "
            "resumed "
            "run must load the same weights (same --seed for random weights, same --checkpoint). "
            "Delete those shards and their .json sidecars, or start again with --overwrite"
        )


def _source_info(rt: Runtime, split: str) -> dict[str, Any]:
    cfg = rt.config
    keys = ("model", "pretrained", "checkpoint", "img_size", "layer", "norm", "pool", "pooled")
    info = {**rt.source.info, "split": split, **{k: getattr(cfg, k) for k in keys}}
    return {
        **info,
        "img_size": int(rt.data_cfg["input_size"][-1]),
        "data_config": jsonable(rt.data_cfg),
        "weights_sha256": rt.weights,
    }
