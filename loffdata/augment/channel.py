"""Per-channel steps folded into one fused multiply-add, shared by both backends.

Brightness/contrast jitter, Gaussian noise, normalisation and channel dropout are all
per-channel affine maps (plus noise), so for each row ``r`` and channel ``c``::

    jittered = x * contrast + mean * (1 - contrast) + brightness * std      # FroFA-style
    noisy    = jittered + noise_scale * std * z                             # z ~ N(0, 1)
    out      = (noisy - mean_n) / std_n * keep                              # normalise, dropout

which is ``out = x * A + B + z * S`` with ``A, B, S`` of shape [R, C] computed here on
the host. ``mean``/``std`` are the manifest's per-channel statistics (0 and 1 when not
given); ``mean_n, std_n`` are them when ``normalize`` is on, else 0 and 1.

The Gaussian field ``z`` (C*H*W values per row) is drawn with torch on the target device
from a generator seeded by ``Params.noise_seed`` (a hash of seed, epoch and the ordered
batch indices), and the same tensor is handed to the DALI pipeline as an input, so both
backends add identical noise. The noise *scale* of each row is keyed per sample; the
noise *field* depends on the batch composition and on the device's generator.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from loffdata.augment.params import Params

__all__ = ["channel_stats", "channel_coefficients", "noise_field", "is_identity"]


def channel_stats(
    values: Sequence[float] | None, channels: int, *, default: float, name: str
) -> np.ndarray:
    """Per-channel statistics as float64 [C]; ``default`` everywhere when ``values`` is None."""
    if values is None:
        return np.full(channels, default, dtype=np.float64)
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size != channels:
        raise ValueError(
            f"manifest {name} has {arr.size} channels but the features have {channels}"
        )
    if name == "std" and np.any(arr <= 0):
        raise ValueError("manifest std must be > 0 for every channel")
    return arr


def channel_coefficients(
    params: Params, *, mean: np.ndarray, std: np.ndarray, normalize: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fused coefficients ``(A, B, S)``, each float32 [R, C], of ``x * A + B + z * S``."""
    con, bri = params.contrast.astype(np.float64), params.brightness.astype(np.float64)
    shift = mean * (1.0 - con) + bri * std
    mean_n, std_n = (mean, std) if normalize else (np.zeros_like(mean), np.ones_like(std))
    keep = params.keep.astype(np.float64) / std_n
    a = con * keep
    b = (shift - mean_n) * keep
    s = params.noise_scale.astype(np.float64)[:, None] * std * keep
    return a.astype(np.float32), b.astype(np.float32), s.astype(np.float32)


def noise_field(
    params: Params, hw: tuple[int, int], *, device: torch.device | str
) -> torch.Tensor | None:
    """Noise field [R, C, h, w] float32 on ``device``, or None when no row is noised.

    Standard normal values are drawn only for the rows with ``noise_scale > 0`` (in row
    order, from one generator seeded by ``params.noise_seed``); other rows are zero.
    """
    noisy = np.flatnonzero(params.noise_scale > 0)
    if noisy.size == 0:
        return None
    gen = torch.Generator(device=device)
    gen.manual_seed(params.noise_seed)
    c, (h, w) = params.in_shape[0], hw
    z = torch.randn((noisy.size, c, h, w), generator=gen, device=device, dtype=torch.float32)
    if noisy.size == params.rows:
        return z
    full = torch.zeros((params.rows, c, h, w), device=device, dtype=torch.float32)
    full[torch.as_tensor(noisy, device=device)] = z
    return full


def is_identity(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether ``x * a + b`` leaves every row unchanged."""
    return bool(np.all(a == 1) and np.all(b == 0))
