"""Extract foundation-model feature maps with timm and write loffdata shards.

Examples::

    python tools/shard.py                      # embedded "shapes" demo -> out/demo/{train,val}
    python tools/shard.py --input data/imagenet --out s3://bucket/in1k-dinov2 \\
        --model vit_base_patch14_dinov2.lvd142m --pretrained --img_size 518 --pool 2
    torchrun --nproc_per_node 8 tools/shard.py --input data.csv --out /data/feats

Re-running the same command resumes; see docs/extract.md.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import fire

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from loffdata.errors import LoffError  # noqa: E402
from loffdata.extract.pipeline import ExtractConfig, extract  # noqa: E402

__all__ = ["main"]


def main(
    *,
    input: Any = None,
    out: str = "out/demo",
    source: str = "auto",
    model: str = "vit_tiny_patch16_224",
    pretrained: bool = False,
    checkpoint: str | None = None,
    model_kwargs: dict | None = None,
    img_size: int | None = None,
    crop_pct: float | None = None,
    layer: int = -1,
    norm: bool = False,
    pooled: bool = False,
    pool: int = 1,
    dtype: str = "float16",
    shard_size: int = 256,
    prefix: str = "shard",
    batch_size: int = 64,
    workers: int | None = None,
    device: str = "auto",
    amp: bool = True,
    skip_bad: bool = False,
    overwrite: bool = False,
    storage_options: dict | None = None,
    endpoint_url: str | None = None,
    shapes_train: int = 1000,
    shapes_val: int = 200,
    shapes_test: int = 0,
    seed: int = 0,
    progress: bool = True,
    config: str | None = None,
) -> None:
    """Extracts features of every split of the input into <out>/<split> shard datasets.

    Args:
        input: image folder (class sub-folders, optional train/val/test), CSV (path,label[,split]),
            WebDataset URL(s)/brace pattern, or nothing for the embedded "shapes" dataset.
        out: output directory or fsspec URL (s3://...).
        source: auto, folder, csv, wds or shapes.
        model: timm model name.
        pretrained: use the hub weights (else random weights, with a warning).
        checkpoint: local weights file for the model.
        model_kwargs: extra timm.create_model arguments, e.g. '{"depth": 2}'.
        img_size: input resolution (default: the model's; 112 for shapes).
        crop_pct: centre-crop fraction of the eval transform (1.0: no crop).
        layer: block/stage to store (negative: from the end).
        norm: apply the final norm to the stored map.
        pooled: also store the pre-logits vector as extra tensor "pooled".
        pool: average-pool the map by this factor before writing.
        dtype: float16, bfloat16, float32 or int8 (per-channel scale).
        shard_size: images per shard.
        prefix: shard file name prefix.
        batch_size: images per forward pass.
        workers: DataLoader workers (default: half the CPU cores, 1..8).
        device: auto, cpu, cuda or cuda:N.
        amp: bf16 autocast + channels_last on CUDA.
        skip_bad: skip unreadable images (listed in the manifest) instead of stopping.
        overwrite: replace an output written with a different configuration.
        storage_options: fsspec options for the output, as JSON.
        endpoint_url: custom S3 endpoint.
        shapes_train: train images of the shapes dataset.
        shapes_val: val images of the shapes dataset.
        shapes_test: test images of the shapes dataset.
        seed: seed of the shapes dataset.
        progress: show a progress bar.
        config: JSON file of defaults for any of these flags (flags given win).
    """
    given = {k: v for k, v in locals().items() if k != "config"}
    merged = _merge_config_file(config, given)
    counts = {s: merged.pop(f"shapes_{s}") for s in ("train", "val", "test")}
    merged["shapes_counts"] = {s: n for s, n in counts.items() if n > 0}
    merged["model_kwargs"] = merged["model_kwargs"] or {}
    merged["storage_options"] = merged["storage_options"] or {}
    try:
        manifests = extract(ExtractConfig(**merged))
    except (LoffError, ValueError) as err:
        sys.exit(f"error: {err}")
    if int(os.environ.get("RANK", "0")) != 0:
        return
    for split, m in manifests.items():
        print(f"{split}: {m.num_samples} samples, {len(m.shards)} shards, features {list(m.features.shape)} "
              f"{m.features.dtype}, skipped {len(m.skipped)} -> {out.rstrip('/')}/{split}")


def _merge_config_file(path: str | None, given: dict[str, Any]) -> dict[str, Any]:
    """Values from a JSON config file override main()'s defaults, never explicit flags."""
    if path is None:
        return dict(given)
    with open(path) as f:
        file_values = json.load(f)
    defaults = {p.name: p.default for p in _main_params()}
    unknown = sorted(set(file_values) - set(defaults))
    if unknown:
        raise SystemExit(f"error: unknown keys {unknown} in config file {path!r}")
    return {k: file_values[k] if k in file_values and v == defaults[k] else v for k, v in given.items()}


def _main_params() -> list:
    import inspect

    return [p for p in inspect.signature(main).parameters.values() if p.name != "config"]


if __name__ == "__main__":
    fire.Fire(main)
