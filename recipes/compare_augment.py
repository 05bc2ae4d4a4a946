"""The two sides' augmentation in ``recipes/compare_finetune.py``, batched torch ops only.

Images: random resized crop (area 0.08-1) + horizontal flip from uint8, then mean/std
normalisation. Feature maps: random resized crop back to the grid (area 0.25-1) + flip
(one ``grid_sample``) + additive Gaussian noise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["MEAN", "STD", "augment_features", "augment_images"]

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _crop_flip_theta(n: int, *, scale: tuple[float, float], gen: torch.Generator) -> torch.Tensor:
    """Per-sample affine matrices ``(n, 2, 3)`` of a random resized crop with a random hflip.

    Box area fraction ~ U(scale), aspect ratio log-uniform in [3/4, 4/3], position uniform;
    a negative x scale flips the crop horizontally.
    """
    area = torch.empty(n).uniform_(*scale, generator=gen)
    log_ratio = torch.empty(n).uniform_(-0.2877, 0.2877, generator=gen)  # log(3/4), log(4/3)
    w = (area * log_ratio.exp()).sqrt().clamp(max=1.0)
    h = (area / log_ratio.exp()).sqrt().clamp(max=1.0)
    cx = (torch.rand(n, generator=gen) * 2 - 1) * (1 - w)
    cy = (torch.rand(n, generator=gen) * 2 - 1) * (1 - h)
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    return theta


def _resample(x: torch.Tensor, theta: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    grid = F.affine_grid(
        theta.to(x.device, x.dtype), [x.shape[0], x.shape[1], *size], align_corners=False
    )
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def augment_images(images: torch.Tensor, *, size: int, gen: torch.Generator) -> torch.Tensor:
    """uint8 ``(N, 3, S, S)`` -> normalised float ``(N, 3, size, size)``: RRC(0.08, 1) + hflip."""
    x = images.float().div_(255)
    x = _resample(x, _crop_flip_theta(x.shape[0], scale=(0.08, 1.0), gen=gen), (size, size))
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def augment_features(
    feats: torch.Tensor, *, gen: torch.Generator, noise: float = 0.1
) -> torch.Tensor:
    """float16 ``(N, C, H, W)`` -> float32, same shape: RRC(0.25, 1) + hflip + Gaussian noise."""
    x = feats.float()
    x = _resample(x, _crop_flip_theta(x.shape[0], scale=(0.25, 1.0), gen=gen), tuple(x.shape[2:]))
    eps = torch.randn(x.shape, generator=gen).to(x.device)
    return x + noise * x.std() * eps
