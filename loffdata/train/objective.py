"""The recipe's training loss: cross-entropy, optional distillation, averaged per sample.

``rows = (1 - w) * CE(student, labels) + w * T**2 * KL(teacher || student_T)`` per delivered
row (``w = distill_weight``; the KL term only when ``w > 0``, from the stored teacher logits,
:mod:`loffdata.train.distill`), then the mean over the ``views`` of each sample and over
samples (:mod:`loffdata.train.views`). Logits ``(heads, rows, K)`` (the classifier's probe
path in training, :class:`~loffdata.train.models.LoffClassifier`) give the mean of that loss
over the heads, so each head is trained on its own.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from loffdata.format.logits import INDEX_EXTRA, LOGITS_EXTRA
from loffdata.train.distill import distill_rows, teacher_probs
from loffdata.train.views import per_row_loss, view_averaged_loss

__all__ = ["check_objective", "recipe_loss"]


def recipe_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    extras: Mapping[str, torch.Tensor] | None = None,
    *,
    views: int = 1,
    label_smoothing: float = 0.0,
    distill_weight: float = 0.0,
    temperature: float = 1.0,
    head_losses: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """The scalar training loss of one delivered batch (see the module docstring).

    ``head_losses``: with logits of several heads, each head's loss is appended to it.

    Raises:
        ValueError: ``distill_weight > 0`` without a ``logits`` extra in ``extras``.
    """
    options = dict(
        views=views,
        label_smoothing=label_smoothing,
        distill_weight=distill_weight,
        temperature=temperature,
    )
    if logits.dim() == 3:  # the probe path's heads (LoffClassifier in training): a loss each
        losses = [recipe_loss(head, labels, extras, **options) for head in logits]
        if head_losses is not None:
            head_losses.extend(losses)
        return torch.stack(losses).mean()
    rows = per_row_loss(logits, labels, label_smoothing=label_smoothing)
    if distill_weight > 0:
        kd = _distill(logits, extras, temperature=temperature)
        rows = (1.0 - distill_weight) * rows + distill_weight * kd
    return view_averaged_loss(rows, views=views)


def _distill(
    logits: torch.Tensor, extras: Mapping[str, torch.Tensor] | None, *, temperature: float
) -> torch.Tensor:
    """Per-row distillation term against the teacher logits stored in ``extras``."""
    if not extras or LOGITS_EXTRA not in extras:
        raise ValueError(
            "distill_weight > 0 needs the 'logits' extra: write the dataset with --teacher"
        )
    probs = teacher_probs(
        extras[LOGITS_EXTRA],
        extras.get(INDEX_EXTRA),
        num_classes=logits.shape[1],
        temperature=temperature,
    )
    return distill_rows(logits, probs, temperature=temperature)


def check_objective(*, views: int, distill_weight: float, temperature: float) -> None:
    """Validate the recipe's loss settings (``TrainConfig.views``, ``distill_weight``,
    ``temperature``).

    Raises:
        ValueError: ``views`` not an int >= 1, ``distill_weight`` outside [0, 1] or
            ``temperature <= 0``.
    """
    if isinstance(views, bool) or not isinstance(views, int) or views < 1:
        raise ValueError(f"views must be an int >= 1, got {views!r}")
    if not 0.0 <= distill_weight <= 1.0:
        raise ValueError(f"distill_weight must be in [0, 1], got {distill_weight!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
