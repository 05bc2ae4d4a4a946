"""Dataset Reinforcement after extraction: a feature-space teacher's logits added to a cache.

:mod:`loffdata.extract.teacher` stores an *image* teacher's logits while extracting. When the
images are gone, or the best teacher is a classifier trained on the cached features (a larger
one, or the recipe's own model for self-distillation), :func:`reinforce` copies a feature
dataset and adds that classifier's logits as the ``logits`` extra (layout:
:mod:`loffdata.format.logits`). Features, labels, keys and the other extras are copied
unchanged; one pass, one process.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fsspec
import numpy as np
import torch
from torch import nn

from loffdata import defaults
from loffdata.devices import resolve_auto
from loffdata.format.codec import Quantized
from loffdata.format.logits import encode_logits
from loffdata.format.manifest import Manifest
from loffdata.format.sample import Sample, decode_sample
from loffdata.format.tar import iter_sample_members
from loffdata.format.writer import WriterConfig, write_dataset

__all__ = ["reinforce"]


def _samples(url: str, manifest: Manifest, storage_options: dict[str, Any]) -> Iterator[Sample]:
    for shard in manifest.shard_urls(url):
        with fsspec.open(shard, "rb", **storage_options) as f:
            for key, members in iter_sample_members(f, shard=shard):
                yield decode_sample(key, members, shard=shard)


def _as_float(x: Any) -> np.ndarray:
    return x.dequantize() if isinstance(x, Quantized) else np.asarray(x, dtype=np.float32)


@torch.no_grad()
def _with_logits(batch: list[Sample], model: nn.Module, topk: int | None, device: torch.device):
    x = torch.from_numpy(np.stack([_as_float(s.features) for s in batch])).to(device)
    z = model(x).float().cpu().numpy()
    for s, row in zip(batch, z, strict=True):
        extras = {
            **{k: np.asarray(v) for k, v in s.extras.items()},
            **encode_logits(row, topk=topk),
        }
        yield (
            s.key,
            s.features if isinstance(s.features, Quantized) else np.asarray(s.features),
            s.label,
            extras,
        )


def _rows(
    samples: Iterator[Sample], model: nn.Module, topk: int | None, size: int, device: Any
) -> Iterator[tuple]:
    """Each sample's row with its logits, ``size`` samples at a time through ``model``."""
    batch: list[Sample] = []
    for s in samples:
        batch.append(s)
        if len(batch) == size:
            yield from _with_logits(batch, model, topk, device)
            batch = []
    if batch:
        yield from _with_logits(batch, model, topk, device)


def reinforce(
    src: str,
    dst: str,
    model: nn.Module,
    *,
    topk: int | None = 10,
    batch_size: int = defaults.BATCH_SIZE,
    device: str = defaults.DEVICE,
    storage_options: dict[str, Any] | None = None,
) -> Manifest:
    """Copy the dataset at ``src`` to ``dst`` with ``model``'s logits as the ``logits`` extra.

    Args:
        src: feature dataset directory or URL.
        dst: output directory or URL.
        model: a classifier over the stored feature maps (``(N, C, H, W) -> (N, K)``).
        topk: logits kept per sample (``None``: all ``K``).
        batch_size: samples per forward pass.
        device: where ``model`` runs (``auto``: CUDA where available, else the CPU).
        storage_options: fsspec options of both locations.

    Returns:
        The manifest written at ``dst``.
    """
    opts = dict(storage_options or {})
    manifest = Manifest.load(src, **opts)
    device = resolve_auto(device)
    model = model.eval().to(device)
    rows = _rows(_samples(src, manifest, opts), model, topk, batch_size, torch.device(device))

    source = {**manifest.source, "teacher": {"kind": "feature", "topk": topk}}
    config = WriterConfig(
        max_samples=max((s.samples for s in manifest.shards), default=256),
        dtype=manifest.features.dtype,
    )
    return write_dataset(dst, rows, config=config, classes=manifest.classes, source=source, **opts)
