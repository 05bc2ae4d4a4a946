"""What every section of ``benchmarks/gpu_check.py`` shares: sizes, the context, caches.

:class:`Context` is what a section is given; :data:`FULL` and :data:`SMOKE` are the sizes of
a device run and of the CPU smoke run (``--smoke --device cpu``).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from loffdata.format.writer import WriterConfig, write_dataset

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Sizes:
    """How big each section's work is."""

    eq_shape: tuple[int, int, int]
    loader_shapes: tuple[tuple[int, int, int], ...]
    loader_n: tuple[int, ...]
    batch: int
    workers: int
    transfer_batches: int
    train_epochs: int
    extract_images: int
    finetune_models: tuple[str, ...]
    h2d_bytes: int


FULL = Sizes(
    eq_shape=(64, 16, 16),
    loader_shapes=((768, 16, 16), (1024, 32, 32)),
    loader_n=(4096, 1536),
    batch=256,
    workers=min(8, os.cpu_count() or 1),
    transfer_batches=200,
    train_epochs=2,
    extract_images=1024,
    finetune_models=("vit_base_patch14_dinov2", "vit_giant_patch14_dinov2"),
    h2d_bytes=512 << 20,
)
SMOKE = Sizes(
    eq_shape=(6, 8, 8),
    loader_shapes=((8, 4, 4),),
    loader_n=(64,),
    batch=8,
    workers=1,
    transfer_batches=12,
    train_epochs=1,
    extract_images=8,
    finetune_models=(),
    h2d_bytes=1 << 20,
)


@dataclass
class Context:
    """What every section gets: the device, the sizes and a scratch directory."""

    device: torch.device
    sizes: Sizes
    root: Path

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)


def make_cache(
    ctx: Context,
    name: str,
    n: int,
    shape: tuple[int, ...],
    dtype: str = "float16",
    classes: int = 10,
) -> str:
    """A random feature cache of ``n`` samples under the scratch directory (written once)."""
    root = ctx.root / name
    if not (root / "manifest.json").exists():
        rng = np.random.default_rng(0)
        base = rng.standard_normal((16, *shape)).astype(np.float32)
        items = ((f"k{i:07d}", base[i % 16] + np.float32(i % 7), i % classes) for i in range(n))
        write_dataset(
            str(root),
            items,
            config=WriterConfig(max_samples=256, dtype=dtype),
            classes=[f"c{i}" for i in range(classes)],
        )
    return str(root)


def digest(x: torch.Tensor, y: torch.Tensor) -> str:
    h = hashlib.sha1(x.detach().float().cpu().numpy().tobytes())
    h.update(y.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()
