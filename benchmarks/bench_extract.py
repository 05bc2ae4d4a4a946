"""Extraction throughput vs the same model's plain batched inference, in one run.

    python benchmarks/bench_extract.py [--quick] [--model resnet18] [--img_size 112]

"plain" runs ``compute_features`` on images that are already decoded, preprocessed and
stacked in memory; "extract" is the full pipeline (``loffdata.extract.pipeline.extract``: image
generation/decoding in DataLoader workers, preprocessing, inference, float16 encoding,
tar writing, sidecars, manifest), end to end including model creation. The ratio
extract/plain is the share of pure inference speed that the pipeline keeps.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import warnings

import fire
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from loffdata.extract.images import load_image, shapes_source  # noqa: E402
from loffdata.extract.pipeline import (  # noqa: E402
    ExtractConfig,
    RandomWeightsWarning,
    build_model,
    build_transform,
    compute_features,
    extract,
)

__all__ = ["main"]


def plain_inference(cfg: ExtractConfig, n: int) -> float:
    """Images/s of batched inference on pre-decoded, preprocessed images."""
    model = build_model(cfg)
    transform, _ = build_transform(model, cfg)
    records = shapes_source(train=n, val=0).splits["train"]
    x = torch.stack([transform(load_image(r.path)) for r in records])
    with torch.inference_mode():
        compute_features(model, x[: cfg.batch_size], layer=cfg.layer, pool=cfg.pool)  # warm-up
        start = time.perf_counter()
        for i in range(0, n, cfg.batch_size):
            compute_features(model, x[i : i + cfg.batch_size], layer=cfg.layer, pool=cfg.pool)
        return n / (time.perf_counter() - start)


def full_extraction(cfg: ExtractConfig) -> float:
    """Images/s of the whole extraction pipeline, end to end."""
    start = time.perf_counter()
    manifests = extract(cfg)
    n = sum(m.num_samples for m in manifests.values())
    return n / (time.perf_counter() - start)


def main(
    *,
    quick: bool = False,
    n: int = 512,
    model: str = "vit_tiny_patch16_224",
    img_size: int = 112,
    batch_size: int = 64,
    workers: int | None = None,
    dtype: str = "float16",
) -> None:
    """Runs both measurements and prints images/s and their ratio.

    Args:
        quick: a few images only (smoke test).
        n: number of images.
        model: timm model name (random weights).
        img_size: input resolution.
        batch_size: images per forward pass.
        workers: DataLoader workers of the extraction (default: half the cores).
        dtype: storage dtype.
    """
    n = 16 if quick else n
    warnings.simplefilter("ignore", RandomWeightsWarning)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = ExtractConfig(
            out=tmp,
            model=model,
            img_size=img_size,
            batch_size=min(batch_size, n),
            workers=workers,
            dtype=dtype,
            shapes_counts={"train": n},
            progress=False,
        )
        plain = plain_inference(cfg, n)
        full = full_extraction(cfg)
    _report(cfg, n, plain, full)


def _report(cfg: ExtractConfig, n: int, plain: float, full: float) -> None:
    """Prints the set-up and both rates (images/s) with their ratio."""
    print(
        f"model={cfg.model} img_size={cfg.img_size} batch={cfg.batch_size} "
        f"workers={cfg.workers} dtype={cfg.dtype} images={n} "
        f"threads={torch.get_num_threads()} cpus={os.cpu_count()}"
    )
    print(f"plain inference: {plain:8.1f} images/s")
    print(f"extraction:      {full:8.1f} images/s")
    print(f"ratio extraction/plain: {full / plain:.2f}")


if __name__ == "__main__":
    fire.Fire(main)
