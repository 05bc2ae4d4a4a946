"""``loffdata show``: look at what an augmentation does to *your* features.

The first ``samples`` samples of a dataset are drawn as images, next to ``views`` augmented
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

__all__ = ["pca_basis", "render_views", "to_rgb"]


def pca_basis(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, 3 principal directions and the 1st/99th percentile of the projection, over (N, C, H, W)."""
    c = x.shape[1]
    flat = x.float().transpose(0, 1).reshape(c, -1).T
    mean = flat.mean(0)
    basis = torch.linalg.svd(flat - mean, full_matrices=False).Vh[:3].T
    if basis.shape[1] < 3:  # fewer than 3 channels: pad with zeros
        basis = torch.cat([basis, torch.zeros(c, 3 - basis.shape[1])], dim=1)
    proj = (flat - mean) @ basis
    lo, hi = torch.quantile(proj, 0.01, dim=0), torch.quantile(proj, 0.99, dim=0)
    return mean, basis, lo, torch.maximum(hi, lo + 1e-6)


def to_rgb(x: torch.Tensor, mean: torch.Tensor, basis: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> np.ndarray:
    """One (C, H, W) map as an (H, W, 3) image in [0, 1]."""
    c, h, w = x.shape
    proj = (x.float().reshape(c, -1).T - mean) @ basis
    return ((proj - lo) / (hi - lo)).clamp(0, 1).reshape(h, w, 3).numpy()


def _first_batch(path: str, n: int, storage_options: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, Any]:
    from loffdata.loader import LoffLoader

    loader = LoffLoader(path, batch_size=n, augment=None, shuffle=False, num_workers=0,
                        storage_options=storage_options)
    features, labels = next(iter(loader))
    return features.float(), labels, loader.manifest


def _augmenter(preset: str, views: int, seed: int, manifest: Any) -> Any:
    from loffdata.augment import Augmenter, AugmentSpec

    spec = AugmentSpec.preset(preset).replace(views=views)
    stats = manifest.stats if manifest is not None else None
    std = None if stats is None else np.maximum(stats.std, 1e-6).tolist()
    mean = None if stats is None else stats.mean.tolist()
    return Augmenter(spec, backend="torch", seed=seed, mean=mean, std=std)


def render_views(path: str, *, out: str | os.PathLike = "show.png", preset: str = "loffta", samples: int = 4,
                 views: int = 3, seed: int = 0, storage_options: dict[str, Any] | None = None) -> str:
    """Writes the PNG (see the module docstring); returns its path.

    Raises:
        LoffError: matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise LoffError("loffdata show needs matplotlib: pip install 'loffdata[show]' (or pip install matplotlib)") from None
    x, y, manifest = _first_batch(path, samples, storage_options or {})
    aug, _ = _augmenter(preset, views, seed, manifest)(x, y, indices=np.arange(len(x)), epoch=0)
    basis = pca_basis(x)
    classes = manifest.classes if manifest is not None else None
    fig, axes = plt.subplots(len(x), views + 1, figsize=(1.9 * (views + 1), 1.9 * len(x) + 0.6), squeeze=False)
    for i in range(len(x)):
        label = int(y[i]) if y.ndim == 1 else int(y[i].argmax())
        name = classes[label] if classes and 0 <= label < len(classes) else str(label)
        panels = [("original", x[i])] + [(f"{preset} view {v + 1}", aug[i * views + v]) for v in range(views)]
        for ax, (title, m) in zip(axes[i], panels):
            ax.imshow(to_rgb(m, *basis), interpolation="nearest")
            ax.set_title(f"{name}: {title}" if title == "original" else title, fontsize=8)
            ax.axis("off")
    c, h, w = x.shape[1:]
    fig.suptitle(f"{os.path.basename(os.path.normpath(path))}: {c}x{h}x{w} features, PCA of channels as RGB",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return os.fspath(out)
