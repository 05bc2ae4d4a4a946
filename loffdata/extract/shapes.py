"""The embedded default dataset ``shapes``: 10 classes drawn procedurally, no files, no network.

Image ``index`` of a split is drawn from ``(seed, split, index)`` on demand, so the same call
always gives the same pixels on every machine. Classes differ in shape and also in global
statistics (hue band, texture frequency), so even features of a random-weight network
separate them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

__all__ = ["SHAPES_CLASSES", "render_shape"]

_SPLITS = ("train", "val", "test")

SHAPES_CLASSES = (
    "disc", "square", "triangle", "ring", "cross",
    "h_stripes", "v_stripes", "checker", "dots", "gradient",
)  # fmt: skip


def render_shape(label: int, *, seed: int, split: str, index: int) -> Image.Image:
    """Draws image ``index`` of ``split``: class ``label``, deterministic in its arguments.

    Classes differ in shape and in global statistics too (hue band, texture frequency),
    so that even features of a randomly initialised network separate them.
    """
    split_id = _SPLITS.index(split) if split in _SPLITS else 7
    rng = np.random.default_rng([seed, split_id, index])
    size = int(rng.integers(64, 257))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    cy, cx = rng.uniform(0.3, 0.7, 2)
    r = rng.uniform(0.18, 0.32)
    mask = _shape_mask(label, yy - cy, xx - cx, r, rng)
    fg = _class_colour(label, rng)
    bg = rng.uniform(0.0, 0.35, 3) + rng.normal(0, 0.06, (size, size, 3))
    img = bg * (1 - mask[..., None]) + fg * mask[..., None]
    img = img + rng.normal(0, 0.04, img.shape)
    return Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8), "RGB")


def _class_colour(label: int, rng: np.random.Generator) -> np.ndarray:
    hue = (label / len(SHAPES_CLASSES) + rng.uniform(-0.03, 0.03)) % 1.0
    k = (np.array([0.0, 2.0, 4.0]) + hue * 6.0) % 6.0
    rgb = 1.0 - np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return 0.35 + 0.65 * rgb * rng.uniform(0.8, 1.0)


def _shape_mask(
    label: int, dy: np.ndarray, dx: np.ndarray, r: float, rng: np.random.Generator
) -> np.ndarray:
    d = np.sqrt(dy**2 + dx**2)
    freq = 4 + 2 * label + rng.uniform(-0.5, 0.5)  # texture frequency grows with the label
    box = (np.abs(dy) < r) & (np.abs(dx) < r)
    masks: dict[int, Callable[[], np.ndarray]] = {
        0: lambda: d < r,
        1: lambda: box,
        2: lambda: (dy < r) & (dy > -r) & (np.abs(dx) < (dy + r) / 2),
        3: lambda: (d < r) & (d > 0.6 * r),
        4: lambda: ((np.abs(dy) < r / 3) | (np.abs(dx) < r / 3)) & (d < 1.3 * r),
        5: lambda: box & (np.sin(dy * freq * 2 * np.pi) > 0),
        6: lambda: box & (np.sin(dx * freq * 2 * np.pi) > 0),
        7: lambda: box & ((np.sin(dy * freq * np.pi) * np.sin(dx * freq * np.pi)) > 0),
        8: lambda: (
            (np.cos(dy * freq * 2 * np.pi) * np.cos(dx * freq * 2 * np.pi) > 0.5) & (d < 1.4 * r)
        ),
        9: lambda: np.clip((dx + 0.5) * (d < 1.5 * r), 0, 1),
    }
    return masks[label % len(SHAPES_CLASSES)]().astype(np.float32)
