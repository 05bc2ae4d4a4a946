"""``loffdata show``: look at what an augmentation does to *your* features.

A few samples of a dataset (the first ones, random ones, or one of each class in turn) are drawn as
images, next to ``views`` augmented
views under a preset. Channels are reduced to RGB by a PCA fitted on the original samples
(as LOFF-TA's figure 4 does), one projection for every panel, so colours are comparable
across views. Needs matplotlib (the ``show`` extra: ``pip install 'loffdata[show]'``).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from loffdata.errors import LoffError

__all__ = ["PICKS", "pca_basis", "pick_indices", "render_views", "to_rgb"]


def pca_basis(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, 3 principal directions and the 1st/99th percentile of the projection, over (N, C, H,
    W)."""
    c = x.shape[1]
    flat = x.float().transpose(0, 1).reshape(c, -1).T
    mean = flat.mean(0)
    basis = torch.linalg.svd(flat - mean, full_matrices=False).Vh[:3].T
    if basis.shape[1] < 3:  # fewer than 3 channels: pad with zeros
        basis = torch.cat([basis, torch.zeros(c, 3 - basis.shape[1])], dim=1)
    proj = (flat - mean) @ basis
    lo, hi = torch.quantile(proj, 0.01, dim=0), torch.quantile(proj, 0.99, dim=0)
    return mean, basis, lo, torch.maximum(hi, lo + 1e-6)


def to_rgb(
    x: torch.Tensor, mean: torch.Tensor, basis: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor
) -> np.ndarray:
    """One (C, H, W) map as an (H, W, 3) image in [0, 1]."""
    c, h, w = x.shape
    proj = (x.float().reshape(c, -1).T - mean) @ basis
    return ((proj - lo) / (hi - lo)).clamp(0, 1).reshape(h, w, 3).numpy()


#: how ``loffdata show`` picks its samples
PICKS = ("first", "random", "per-class")


def pick_indices(labels: np.ndarray, n: int, pick: str, seed: int) -> list[int]:
    """Sample indices to draw: the first ``n``, ``n`` at random (seeded), or per class: the
    first sample of each class in turn (classes in label order, cycling) until ``n``."""
    total = len(labels)
    if pick == "first":
        return list(range(min(n, total)))
    if pick == "random":
        rng = np.random.default_rng(seed)
        return sorted(rng.choice(total, size=min(n, total), replace=False).tolist())
    by_class = [list(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    chosen: list[int] = []
    for turn in range(max((len(b) for b in by_class), default=0)):
        chosen += [int(b[turn]) for b in by_class if turn < len(b)]
    return chosen[:n]


def _picked_batch(
    path: str, n: int, pick: str, seed: int, storage_options: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """Features (float), labels and the manifest of the samples ``pick`` chooses."""
    from loffdata.stream.dataset import StreamingDataset

    ds = StreamingDataset(path, shuffle=False, storage_options=storage_options)
    if pick == "per-class":  # labels of every sample: one pass over the dataset
        labels = np.asarray([_label(x["label"]) for x in ds], dtype=np.int64)
    else:
        labels = np.zeros(len(ds), dtype=np.int64)
    view = ds.indexed()
    items = [view[i] for i in pick_indices(labels, n, pick, seed)]
    x = torch.stack([item["features"].float() for item in items])
    y = torch.tensor([_label(item["label"]) for item in items])
    return x, y, ds.shards.manifest


def _label(label: Any) -> int:
    return -1 if label is None else int(np.argmax(label)) if np.ndim(label) else int(label)


def _augmenter(preset: str, views: int, seed: int, manifest: Any) -> Any:
    from loffdata.augment import Augmenter, AugmentSpec

    spec = AugmentSpec.preset(preset).replace(views=views)
    stats = manifest.stats if manifest is not None else None
    std = None if stats is None else np.maximum(stats.std, 1e-6).tolist()
    mean = None if stats is None else stats.mean.tolist()
    return Augmenter(spec, backend="torch", seed=seed, mean=mean, std=std)


def render_views(
    path: str,
    *,
    out: str | os.PathLike = "show.png",
    preset: str = "loffta",
    samples: int = 4,
    views: int = 3,
    seed: int = 0,
    pick: str = "first",
    storage_options: dict[str, Any] | None = None,
) -> str:
    """Writes the PNG (see the module docstring); returns its path.

    Raises:
        LoffError: matplotlib is not installed.
    """
    plt = _pyplot()
    x, y, manifest = _picked_batch(path, samples, pick, seed, storage_options or {})
    aug, _ = _augmenter(preset, views, seed, manifest)(x, y, indices=np.arange(len(x)), epoch=0)
    basis = pca_basis(x)
    classes = manifest.classes if manifest is not None else None
    fig, axes = plt.subplots(
        len(x), views + 1, figsize=(1.9 * (views + 1), 1.9 * len(x) + 0.6), squeeze=False
    )
    for i in range(len(x)):
        label = int(y[i])
        name = classes[label] if classes and 0 <= label < len(classes) else str(label)
        panels = [("original", x[i])] + [
            (f"{preset} view {v + 1}", aug[i * views + v]) for v in range(views)
        ]
        _draw_row(axes[i], panels, name, basis)
    c, h, w = x.shape[1:]
    name = os.path.basename(os.path.normpath(path))
    fig.suptitle(f"{name}: {c}x{h}x{w} features, PCA of channels as RGB", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return os.fspath(out)


def _draw_row(axes: Any, panels: list[tuple[str, Any]], name: str, basis: Any) -> None:
    """One sample's row: each ``(title, map)`` panel as RGB, the original titled ``name``."""
    for ax, (title, m) in zip(axes, panels):
        ax.imshow(to_rgb(m, *basis), interpolation="nearest")
        ax.set_title(f"{name}: {title}" if title == "original" else title, fontsize=8)
        ax.axis("off")


def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display needed).

    Raises:
        LoffError: matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise LoffError(
            "loffdata show needs matplotlib: "
            "pip install 'loffdata[show]' (or pip install matplotlib)"
        ) from None
    return plt
