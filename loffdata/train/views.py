"""The loss over several augmented views of each sample, averaged per sample.

``LoffLoader(views=k)`` delivers ``batch_size * k`` rows, the ``k`` views of a sample adjacent
(rows ``i*k .. i*k+k-1`` belong to sample ``i``). Reading a sample once and training on ``k``
views of it costs one read: the recipe's ``views`` option turns this into more gradient signal
per sample read. The loss is the mean over the views of a sample, then the mean over samples,
so every sample weighs the same whatever ``k`` is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["per_row_loss", "view_averaged_loss"]


def per_row_loss(
    logits: torch.Tensor, target: torch.Tensor, *, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Cross-entropy of every row (hard int labels or soft float labels), in float32.

    Returns:
        ``(N,)`` losses; their mean equals :func:`loffdata.train.utils.loss_fn`.
    """
    target = target.float() if target.is_floating_point() else target.long()
    return F.cross_entropy(
        logits.float(), target, label_smoothing=label_smoothing, reduction="none"
    )


def view_averaged_loss(rows: torch.Tensor, *, views: int) -> torch.Tensor:
    """Mean over the ``views`` adjacent rows of each sample, then over samples.

    Args:
        rows: ``(N * views,)`` per-row losses, the views of a sample adjacent.
        views: views per sample.

    Raises:
        ValueError: ``views < 1`` or a row count that is not a multiple of ``views``.
    """
    if isinstance(views, bool) or not isinstance(views, int) or views < 1:
        raise ValueError(f"views must be an int >= 1, got {views!r}")
    if rows.dim() != 1 or rows.shape[0] % views:
        raise ValueError(f"expected (N * {views},) per-row losses, got shape {tuple(rows.shape)}")
    return rows.view(-1, views).mean(dim=1).mean()
