"""Per-channel steps folded into one fused multiply-add, shared by both backends.

Brightness/contrast jitter, Gaussian noise, normalisation and channel dropout are all
per-channel affine maps (plus noise), so for each row ``r`` and channel ``c``::

    jittered = x * contrast + mean * (1 - contrast) + brightness * std      # FroFA-style
    noisy    = jittered + noise_scale * std * z                             # z ~ N(0, 1)
    out      = (noisy - mean_n) / std_n * keep                              # normalise, dropout

which is ``out = x * A + B + z * S`` with ``A, B, S`` of shape [R, C] computed here on
the host. ``mean``/``std`` are the manifest's per-channel statistics (0 and 1 when not
given); ``mean_n, std_n`` are them when ``normalize`` is on, else 0 and 1.

The Gaussian field ``z`` (C*H*W values per row) is drawn with torch on the target device,
row by row, each noisy row from a generator seeded by its own ``Params.noise_seed`` (a
hash of seed, epoch, global sample index and view), and the same tensor is handed to the
DALI pipeline as an input, so both backends add identical noise. A row's noise does not
depend on the batch it is in; it depends on the device type's generator. Rows without
noise are zero and cost no draw.

**Constant channels** (manifest std 0, e.g. the dead channels of a ReLU CNN) are allowed:
every std is raised to the floor ``STD_FLOOR_REL * max(std)`` (``STD_FLOOR_ABS`` when all
channels are constant) before it is used. Noise and brightness, which are in std units,
then leave a constant channel (almost) unchanged; normalisation maps it to exactly 0 (its
normalised constant: the value is its mean), with ``A = B = S = 0`` for it, rather than
amplifying the stored value's rounding by ``1 / floor`` into noise. Both backends apply the
same coefficients, so they agree exactly on it. A negative or non-finite std is still an error.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from loffdata.augment.opkit import Params

__all__ = [
    "channel_stats",
    "channel_coefficients",
    "noise_field",
    "is_identity",
    "constant_channels",
    "STD_FLOOR_REL",
    "STD_FLOOR_ABS",
]

#: std floor relative to the largest channel std (constant channels get this std).
STD_FLOOR_REL = 1e-6
#: std used for every channel when all of them are constant.
STD_FLOOR_ABS = 1e-6


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
    if name == "std":
        return _floored_std(arr)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"manifest {name} has non-finite values")
    return arr


def _floored_std(std: np.ndarray) -> np.ndarray:
    """``std`` with constant (0) channels raised to the documented floor."""
    if not np.all(np.isfinite(std)) or np.any(std < 0):
        raise ValueError("manifest std must be finite and >= 0 for every channel")
    top = float(std.max()) if std.size else 0.0
    floor = STD_FLOOR_REL * top if top > 0 else STD_FLOOR_ABS
    return np.maximum(std, floor)


def constant_channels(std: Sequence[float] | np.ndarray) -> int:
    """How many channels of a manifest std are constant (std 0, or below the floor)."""
    return int(_constant_mask(_floored_std(np.asarray(std, dtype=np.float64).ravel())).sum())


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
    if normalize:  # a constant channel is its mean: exactly 0 once normalised
        const = _constant_mask(std)
        a[:, const], b[:, const], s[:, const] = 0.0, 0.0, 0.0
    return a.astype(np.float32), b.astype(np.float32), s.astype(np.float32)


def _constant_mask(std: np.ndarray) -> np.ndarray:
    """Channels of a floored std (:func:`channel_stats`) that are at the floor: constant."""
    top = float(std.max()) if std.size else 0.0
    if top <= STD_FLOOR_ABS:
        return np.ones(std.shape, dtype=bool)
    return std <= STD_FLOOR_REL * top * (1 + 1e-9)


def noise_field(
    params: Params, hw: tuple[int, int], *, device: torch.device | str
) -> torch.Tensor | None:
    """Noise field [R, C, h, w] float32 on ``device``, or None when no row is noised.

    Each noisy row (``noise_scale > 0``) is drawn by a torch generator on ``device``
    seeded with the row's own ``params.noise_seed`` (keyed per sample and view); the other
    rows are zero. A row's field is thus the same in any batch, for any batch size, number
    of workers or ranks; it depends on the device type (CPU and CUDA generators differ).
    """
    noisy = np.flatnonzero(params.noise_scale > 0)
    if noisy.size == 0:
        return None
    device = torch.device(device)
    c, (h, w) = params.in_shape[0], hw
    shape = (params.rows, c, h, w)
    every = noisy.size == params.rows
    z = (torch.empty if every else torch.zeros)(shape, device=device, dtype=torch.float32)
    gen = torch.Generator(device=device)
    for row in noisy.tolist():
        gen.manual_seed(int(params.noise_seed[row]))
        torch.randn((c, h, w), generator=gen, device=device, dtype=torch.float32, out=z[row])
    return z


def is_identity(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether ``x * a + b`` leaves every row unchanged."""
    return bool(np.all(a == 1) and np.all(b == 0))
