"""The run's configuration record ``<out>/extract_config.json``, and the resume check against it.

The fingerprint (the fields that change the stored features, the input, and the sha256 of
the model weights) must match for a re-run to resume into an output; otherwise the run is
refused (or, with ``overwrite``, the output is replaced).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from loffdata.errors import LoffError
from loffdata.extract.extractconfig import CONFIG_NAME, ExtractConfig
from loffdata.extract.images import ImageSource
from loffdata.extract.jsonio import jsonable, read_json, write_json
from loffdata.extract.runtime import Runtime

__all__ = ["check_previous", "check_same_weights", "config_fingerprint", "write_config"]


_FINGERPRINT_FIELDS = (
    "model", "pretrained", "checkpoint", "model_kwargs", "img_size", "crop_pct", "layer",
    "norm", "pooled", "pool", "dtype", "shard_size", "prefix",
    "teacher", "teacher_topk", "teacher_views",
)  # fmt: skip


_SECRET_WORDS = ("key", "secret", "token", "password", "credential")


def config_fingerprint(cfg: ExtractConfig, source: ImageSource, weights: str) -> dict[str, Any]:
    """What must match for a re-run to resume: feature settings, input, and the weights' sha256."""
    d = {k: getattr(cfg, k) for k in _FINGERPRINT_FIELDS}
    counts = {s: len(r) for s, r in source.splits.items()}
    return jsonable({**d, "source": source.info, "counts": counts, "weights_sha256": weights})


def _redact(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {
            k: "***" if any(w in str(k).lower() for w in _SECRET_WORDS) else _redact(v)
            for k, v in obj.items()
        }
    return obj


def check_previous(rt: Runtime, fingerprint: dict[str, Any]) -> None:
    """Refuses to resume into an output written with a different configuration."""
    path = f"{rt.root}/{CONFIG_NAME}"
    if not rt.fs.exists(path):
        return
    previous = read_json(rt.fs, path).get("fingerprint")
    if previous == fingerprint:
        return
    if not rt.config.overwrite:
        changed = sorted(k for k in fingerprint if (previous or {}).get(k) != fingerprint[k])
        why = (
            " (the model weights differ: same --seed for random weights, same --checkpoint)"
            if "weights_sha256" in changed
            else ""
        )
        raise LoffError(
            f"{rt.config.out!r} holds an extraction with a different configuration "
            f"({changed}){why}; "
            "use another --out or --overwrite"
        )
    if rt.ctx.rank == 0:
        rt.fs.rm(rt.root, recursive=True)


def check_same_weights(rt: Runtime, fingerprint: dict[str, Any]) -> None:
    """Every rank: refuses to go on when rank 0 recorded other model weights than this rank's."""
    recorded = read_json(rt.fs, f"{rt.root}/{CONFIG_NAME}")["fingerprint"]
    if recorded.get("weights_sha256") != fingerprint["weights_sha256"]:
        raise LoffError(
            f"rank {rt.ctx.rank}: its model weights (sha256 "
            f"{fingerprint['weights_sha256'][:12]}...) differ "
            f"from rank 0's ({str(recorded.get('weights_sha256'))[:12]}...); every rank must load "
            "the same "
            "weights (same --seed for random weights, the same --checkpoint file on every node)"
        )


def write_config(rt: Runtime, fingerprint: dict[str, Any]) -> None:
    import timm

    record = {
        "config": _redact(jsonable(dataclasses.asdict(rt.config))),
        "fingerprint": fingerprint,
        "data_config": jsonable(rt.data_cfg),
        "splits": {s: len(r) for s, r in rt.source.splits.items()},
        "classes": rt.source.classes,
        "world_size": rt.ctx.world_size,
        "device": str(rt.device),
        "versions": {"torch": torch.__version__, "timm": timm.__version__},
    }
    rt.fs.makedirs(rt.root, exist_ok=True)
    write_json(rt.fs, f"{rt.root}/{CONFIG_NAME}", record)
