"""Knowledge distillation from teacher logits stored in the dataset (Dataset Reinforcement).

A dataset written with ``tools/shard.py --teacher MODEL`` carries the ``logits`` extra (and
``logits_index`` when top-k compressed; layout in :mod:`loffdata.format.logits`). Batched by
the loader they are ``(N, A, k)``: ``A`` teacher targets (image-space augmentations) of
``k`` logits per sample.

The teacher distribution of a sample is the softmax of its stored logits at temperature
``T``, mean over its ``A`` targets. **Top-k:** the softmax runs over the ``k`` stored logits
only, so the mass the teacher gave the other ``K - k`` classes is dropped and the top-k is
renormalised to 1 (exact when ``k = K``; at ``k = 10`` of 1000 ImageNet classes a trained
teacher typically keeps most of its mass). The loss of a row is
``T**2 * KL(teacher || softmax(student / T))`` (Hinton et al.; the ``T**2`` keeps gradient
sizes comparable across temperatures).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["distill_rows", "teacher_probs"]


def teacher_probs(
    logits: torch.Tensor,
    index: torch.Tensor | None = None,
    *,
    num_classes: int,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Teacher class probabilities ``(N, num_classes)`` from stored logits.

    Args:
        logits: ``(N, A, k)`` or ``(N, k)`` stored logits (``k = num_classes`` when full).
        index: class indices of a top-k layout, same shape; ``None``: full logits.
        num_classes: classes ``K`` of the student.
        temperature: softmax temperature ``T > 0``.

    Raises:
        ValueError: shapes that do not fit, or ``temperature <= 0``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = logits.float()
    z = z[:, None] if z.dim() == 2 else z
    if z.dim() != 3:
        raise ValueError(f"teacher logits must be (N, A, k) or (N, k), got {tuple(logits.shape)}")
    p = torch.softmax(z / temperature, dim=-1)
    if index is None:
        if z.shape[-1] != num_classes:
            raise ValueError(
                f"full teacher logits have {z.shape[-1]} classes, the student {num_classes}"
            )
        return p.mean(dim=1)
    idx = index.long().reshape(z.shape)
    dense = torch.zeros(z.shape[0], z.shape[1], num_classes, dtype=p.dtype, device=p.device)
    return dense.scatter_(-1, idx, p).mean(dim=1)


def distill_rows(
    student: torch.Tensor, teacher: torch.Tensor, *, temperature: float = 1.0
) -> torch.Tensor:
    """Per-row ``T**2 * KL(teacher || softmax(student / T))``, shape ``(N,)``.

    Args:
        student: ``(N, K)`` student logits.
        teacher: ``(N, K)`` teacher probabilities (:func:`teacher_probs`); zeros allowed.
    """
    if student.shape != teacher.shape:
        raise ValueError(
            f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} shapes differ"
        )
    log_q = F.log_softmax(student.float() / temperature, dim=-1)
    kl = torch.special.xlogy(teacher, teacher) - teacher * log_q
    return kl.sum(dim=-1) * temperature**2
