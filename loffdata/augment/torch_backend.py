"""Torch backend: the reference semantics, batched (no loop over samples), CPU or GPU.

It runs the registry's steps (:data:`loffdata.augment.registry.STEPS`) in their declared
order; each is declared once, with its op, under :mod:`loffdata.augment.ops` (pooling,
views, crop + flips, the fused per-channel step ``x * A + B + z * S``, cutout, rot90,
mixup/cutmix, the cast; ``docs/augmentations.md`` has the table).

A step that does nothing for a batch is skipped, and the maps are cast to float32 only
before the first step that computes (resampling, the fused multiply-add, mixing); flips and
rot90 are exact in any dtype. The identity preset therefore costs nothing. Per-batch
parameter arrays reach the device through :func:`~loffdata.augment.staging.stage` (one
pinned ``non_blocking`` copy per step), so the host never waits for the GPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from loffdata.augment.channel import channel_coefficients, channel_stats
from loffdata.augment.opkit import Params, StepContext
from loffdata.augment.registry import STEPS
from loffdata.augment.spec import AugmentSpec

__all__ = ["TorchBackend"]


class TorchBackend:
    """Applies :class:`Params` with batched torch ops (the reference semantics).

    Args:
        spec: the augmentation spec the params were drawn for.
        mean: manifest per-channel mean, or None (zeros).
        std: manifest per-channel std, or None (ones: noise std is then absolute).
    """

    name = "torch"

    def __init__(
        self,
        spec: AugmentSpec,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        self.spec = spec
        self.mean, self.std = mean, std
        self._stats: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def coefficients(self, params: Params) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The fused ``(A, B, S)`` per-channel coefficients for ``params``."""
        c = params.in_shape[0]
        if c not in self._stats:  # checked and floored once per channel count
            self._stats[c] = (
                channel_stats(self.mean, c, default=0.0, name="mean"),
                channel_stats(self.std, c, default=1.0, name="std"),
            )
        mean, std = self._stats[c]
        return channel_coefficients(params, mean=mean, std=std, normalize=self.spec.normalize)

    def context(self, x: torch.Tensor, params: Params) -> StepContext:
        """What the steps see for this batch."""
        return StepContext(params=params, spec=self.spec, backend=self, dtype=x.dtype)

    def apply(self, x: torch.Tensor, y: torch.Tensor | None, params: Params):
        """Augment ``x`` [N, C, H, W] (and labels ``y`` [N]) with ``params``."""
        ctx = self.context(x, params)
        for step in STEPS:
            x, y = step.torch(x, y, ctx)
        return x, y
