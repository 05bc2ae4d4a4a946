"""Fixtures for the augmentation tests: small structured feature batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def make_features(
    n: int, c: int, h: int, w: int, *, dtype: torch.dtype = torch.float32, seed: int = 0
) -> torch.Tensor:
    """Smooth-ish random maps with per-channel offsets and scales (so mean/std matter)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, c, h, w, generator=g)
    base = base + torch.linspace(-1, 1, w)[None, None, None, :]
    scale = torch.rand(c, generator=g)[None, :, None, None] + 0.5
    offset = torch.randn(c, generator=g)[None, :, None, None]
    return (base * scale + offset).to(dtype)


@pytest.fixture
def features():
    return make_features


@pytest.fixture
def channel_std():
    def make(c: int) -> np.ndarray:
        return np.linspace(0.5, 2.0, c)

    return make
