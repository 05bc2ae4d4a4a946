"""One copy of the training tests' data: learnable synthetic feature maps in train/val splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from loffdata.format.writer import WriterConfig, write_dataset

__all__ = ["learnable_samples", "write_splits"]


def learnable_samples(n: int, *, seed: int, classes: int = 3, shape=(16, 4, 4)):
    """Noisy class-dependent maps: learnable in a few epochs, not at once."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(123).standard_normal((classes, shape[0], 1, 1))
    for i in range(n):
        y = i % classes
        x = centers[y] * 0.5 + rng.standard_normal(shape)
        yield f"s{i:06d}", x.astype(np.float32), y


def write_splits(root: Path, *, train: int, val: int, shard: int) -> dict[str, str]:
    """``train`` and ``val`` samples (seeds 1 and 2) in shards of ``shard``; their paths by
    split."""
    for split, n, seed in (("train", train, 1), ("val", val, 2)):
        write_dataset(
            str(root / split),
            learnable_samples(n, seed=seed),
            config=WriterConfig(max_samples=shard),
            classes=["a", "b", "c"],
            source={"model": "synthetic"},
        )
    return {"train": str(root / "train"), "val": str(root / "val")}
