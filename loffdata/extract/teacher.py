"""Dataset Reinforcement: a teacher's logits stored next to the features, once.

``tools/shard.py --teacher MODEL`` runs a classifier over the same preprocessed images as the
feature model and writes its logits as the ``logits`` extra (top-k compressed with
``--teacher_topk``; layout and sizes in :mod:`loffdata.format.logits`), so every later
training can distil from it without running the teacher (``TrainConfig.distill_weight``).

- ``MODEL`` is any timm classifier name (``--pretrained`` / ``--checkpoint`` apply to the
  feature model only; a teacher is created with ``pretrained=`` the same flag), or ``self``:
  the feature model's own classification head.
- ``--teacher_views A`` stores ``A`` targets per image: the image itself, then ``A - 1``
  image-space augmentations (random resized crop, scale 0.35-1, and a horizontal flip)
  drawn from ``(teacher_seed, image index, view)`` alone, so a resumed or distributed
  extraction writes the same targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from loffdata.format.logits import encode_logits

__all__ = ["SELF", "Teacher", "augment_views", "build_teacher"]

#: ``--teacher self``: the feature model's own head.
SELF = "self"
_SCALE = (0.35, 1.0)
_RATIO = (3 / 4, 4 / 3)


def _crop_box(rng: np.random.Generator, h: int, w: int) -> tuple[int, int, int, int]:
    """A random-resized-crop box ``(top, left, height, width)`` (torchvision's rule, one try)."""
    area = h * w * rng.uniform(*_SCALE)
    ratio = np.exp(rng.uniform(np.log(_RATIO[0]), np.log(_RATIO[1])))
    ch = int(min(h, max(1, round(np.sqrt(area / ratio)))))
    cw = int(min(w, max(1, round(np.sqrt(area * ratio)))))
    return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw


def augment_views(
    images: torch.Tensor, indices: list[int], *, views: int, seed: int = 0
) -> torch.Tensor:
    """``(N * views, 3, H, W)``: each image, then ``views - 1`` augmentations of it (adjacent).

    View 0 is the image unchanged; view ``a > 0`` of image ``i`` is a random resized crop and
    flip drawn from ``np.random.default_rng([seed, i, a])``.
    """
    h, w = images.shape[-2:]
    out = []
    for img, index in zip(images, indices, strict=True):
        out.append(img)
        for a in range(1, views):
            rng = np.random.default_rng([seed, int(index), a])
            top, left, ch, cw = _crop_box(rng, h, w)
            view = img[:, top : top + ch, left : left + cw][None]
            view = F.interpolate(view, size=(h, w), mode="bilinear", align_corners=False)[0]
            out.append(view.flip(-1) if rng.random() < 0.5 else view)
    return torch.stack(out)


@dataclass
class Teacher:
    """A classifier whose logits become the ``logits`` extra of each image.

    Attributes:
        model: the classifier (eval mode, on the extraction device).
        topk: logits kept per target (``None``: all).
        views: targets per image (1: the image only).
        seed: seed of the image-space augmentations.
        input_size: ``(H, W)`` the teacher wants; images are resized to it (``None``: as given).
    """

    model: torch.nn.Module
    topk: int | None = 10
    views: int = 1
    seed: int = 0
    input_size: tuple[int, int] | None = None

    @torch.inference_mode()
    def logits(self, images: torch.Tensor, indices: list[int]) -> torch.Tensor:
        """``(N, views, K)`` float32 teacher logits of preprocessed ``images``."""
        x = (
            augment_views(images, indices, views=self.views, seed=self.seed)
            if self.views > 1
            else images
        )
        if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False)
        z = self.model(x).float()
        return z.view(images.shape[0], self.views, -1)

    def extras(self, images: torch.Tensor, indices: list[int]) -> list[dict[str, np.ndarray]]:
        """Per image, the extras to write: ``logits`` (and ``logits_index`` when top-k)."""
        z = self.logits(images, indices).cpu().numpy()
        return [encode_logits(row, topk=self.topk) for row in z]


def build_teacher(
    config: Any, feature_model: torch.nn.Module, device: torch.device
) -> Teacher | None:
    """The teacher of an :class:`~loffdata.extract.pipeline.ExtractConfig` (``None``: no teacher).

    Raises:
        ValueError: ``teacher_views < 1``, ``teacher_topk < 1``, or a feature model without
            a classification head for ``teacher="self"``.
    """
    name = getattr(config, "teacher", None)
    if not name:
        return None
    views, topk = int(config.teacher_views), config.teacher_topk
    if views < 1 or (topk is not None and topk < 1):
        raise ValueError(
            f"teacher_views must be >= 1 and teacher_topk >= 1 or None, got {views}, {topk}"
        )
    if name == SELF:
        if getattr(feature_model, "num_classes", 0) < 1:
            raise ValueError(
                f"--teacher self: the feature model {config.model!r} has no classification head"
            )
        return Teacher(feature_model, topk=topk, views=views, seed=config.seed)
    import timm

    model = (
        timm.create_model(name, pretrained=config.pretrained)
        .eval()
        .requires_grad_(False)
        .to(device)
    )
    size = tuple(getattr(model, "pretrained_cfg", {}).get("input_size", (3, 0, 0))[1:]) or None
    return Teacher(
        model,
        topk=topk,
        views=views,
        seed=config.seed,
        input_size=size if size and all(size) else None,
    )
