"""The loader's augmentation step: the spec calibrated once, and the augmenter on the device.

The backends themselves live in :mod:`loffdata.augment` (imported here only when used, so
``import loffdata`` does not import DALI).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

__all__ = ["build_augmenter", "calibrated", "channel_stats"]

#: Samples read, in order, to calibrate ``AugmentSpec.target_similarity``.
CALIBRATION_SAMPLES = 512


def channel_stats(manifest: Any) -> tuple[list[float] | None, list[float] | None]:
    """The manifest's per-channel mean and std; ``(None, None)`` without statistics."""
    stats = None if manifest is None else manifest.stats
    return (None, None) if stats is None else (stats.mean.tolist(), stats.std.tolist())


def calibrated(
    spec: Any, calibration_set: Iterable[dict], *, seed: int, manifest: Any
) -> tuple[Any, dict]:
    """``spec`` with its noise/jitter magnitudes searched (:mod:`loffdata.augment.similarity`)
    to meet ``target_similarity`` on the first samples of ``calibration_set`` (batches of
    the dataset, in order); and the record of that search."""
    from loffdata.augment.similarity import calibrate

    features, have = [], 0
    for batch in calibration_set:
        features.append(batch["features"].clone())
        have += len(features[-1])
        if have >= CALIBRATION_SAMPLES:
            break
    mean, std = channel_stats(manifest)
    sample = torch.cat(features)[:CALIBRATION_SAMPLES]
    return calibrate(spec, sample, seed=seed, mean=mean, std=std)


def build_augmenter(spec: Any, backend: str, *, device: torch.device, seed: int, manifest: Any):
    """The :class:`~loffdata.augment.Augmenter` of ``spec`` on ``device``."""
    from loffdata.augment import Augmenter

    mean, std = channel_stats(manifest)
    return Augmenter(spec, backend=backend, device=device, seed=seed, mean=mean, std=std)
