"""Draw docs/img/augmentations.png: a feature map before and after each augmentation.

The feature map is synthetic but structured: a generated image (shapes on a gradient)
through a fixed random conv + ReLU + stride, 48 channels on a 16x16 grid. Channels are
shown as RGB through a PCA fitted on the original map (the same projection for every
panel, so colours are comparable)::

    python tools/plot_augmentations.py [--out docs/img/augmentations.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(
    0, str(Path(__file__).resolve().parents[1])
)  # run from a checkout without installing

from loffdata.augment import Augmenter, AugmentSpec  # noqa: E402

PANELS: dict[str, dict] = {
    "original": {},
    "hflip": {"hflip": 1.0},
    "vflip": {"vflip": 1.0},
    "rot90": {"rot90": 1.0},
    "random resized crop": {"crop": 1.0, "crop_scale": (0.2, 0.4)},
    "noise (std 0.5)": {"noise": 1.0, "noise_std": (0.5, 0.5)},
    "avg pool x2": {"pool_factor": 2},
    "adaptive pool 5x5": {"pool_size": (5, 5)},
    "jitter (FroFA)": {"jitter": 1.0, "brightness": 1.0, "contrast": 0.5},
    "channel dropout 0.5": {"channel_dropout": 1.0, "channel_dropout_rate": 0.5},
    "mixup": {"mixup": 1.0, "num_classes": 2},
    "cutmix": {"cutmix": 1.0, "num_classes": 2},
    "preset loffta": {"preset": "loffta"},
    "preset frofa": {"preset": "frofa"},
    "trivial augment": {
        "trivial": True,
        "brightness": 1.0,
        "noise_std": (0, 0.5),
        "channel_dropout_rate": 0.5,
    },
}


def synthetic_image(size: int = 64, seed: int = 0) -> torch.Tensor:
    """A 3 x size x size image: colour gradient, a disc, a square, a stripe."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    img = torch.stack([xx, yy, 1 - xx * yy])
    disc = ((xx - 0.3) ** 2 + (yy - 0.35) ** 2) < 0.03
    square = (xx > 0.55) & (xx < 0.85) & (yy > 0.55) & (yy < 0.85)
    stripe = (yy > 0.12) & (yy < 0.2)
    img[:, disc] = torch.tensor([1.0, 0.1, 0.1])[:, None]
    img[:, square] = torch.tensor([0.1, 0.2, 1.0])[:, None]
    img[:, stripe] = torch.tensor([1.0, 1.0, 0.1])[:, None]
    return img


def features_of(img: torch.Tensor, channels: int = 48, seed: int = 0) -> torch.Tensor:
    """Random-conv features [channels, size/4, size/4] of an image."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(channels, 3, 5, 5, generator=g) / 5
    return F.relu(F.conv2d(img[None], weight, padding=2, stride=4))[0]


def pca_rgb(
    maps: torch.Tensor, basis: torch.Tensor, mean: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor
):
    """Project [C, H, W] onto 3 principal components, scaled to [0, 1]."""
    c, h, w = maps.shape
    proj = (maps.reshape(c, -1).T - mean) @ basis
    return ((proj - lo) / (hi - lo)).clamp(0, 1).reshape(h, w, 3).numpy()


def render(out: Path) -> None:
    """Augment a feature map with every panel's spec and save the grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    feats = torch.stack(
        [features_of(synthetic_image()), features_of(synthetic_image().flip(-1).flip(-2))]
    )
    c = feats.shape[1]
    flat = feats[0].reshape(c, -1).T
    mean = flat.mean(0)
    basis = torch.linalg.svd(flat - mean, full_matrices=False).Vh[:3].T
    proj = (flat - mean) @ basis
    lo, hi = proj.min(0).values, proj.max(0).values
    std = feats.transpose(0, 1).reshape(c, -1).std(1).clamp_min(1e-3)
    cols = 5
    fig, axes = plt.subplots(3, cols, figsize=(2.2 * cols, 7.0))
    for ax, (title, cfg) in zip(axes.ravel(), PANELS.items()):
        aug = Augmenter(AugmentSpec.from_dict(cfg), backend="torch", seed=3, std=std.tolist())
        x, _ = aug(feats, torch.tensor([0, 1]), indices=np.array([0, 1]), epoch=0)
        ax.imshow(pca_rgb(x[0], basis, mean, lo, hi), interpolation="nearest")
        ax.set_title(f"{title}\n{tuple(x.shape[-2:])}", fontsize=9)
        ax.axis("off")
    fig.suptitle(
        "loffdata tensor augmentations (48x16x16 feature map, PCA of channels as RGB)", fontsize=11
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "docs/img/augmentations.png",
    )
    args = parser.parse_args(argv)
    render(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
