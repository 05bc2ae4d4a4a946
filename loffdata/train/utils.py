"""Small training helpers shared by the recipes: loss, optimizer, learning-rate schedule.

The loss takes hard labels (int64 class indices) or soft labels (float class
probabilities, as mixup/cutmix produce), so the model never needs to know which.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["create_optimizer", "loss_fn", "lr_at", "param_groups"]


def loss_fn(
    logits: torch.Tensor, target: torch.Tensor, *, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Mean cross-entropy for hard or soft labels, computed in float32.

    Args:
        logits: ``(N, K)`` scores, any float dtype.
        target: ``(N,)`` integer class indices, or ``(N, K)`` float class probabilities.
        label_smoothing: passed to ``F.cross_entropy`` (applied to soft labels too).

    Returns:
        The scalar loss, equal to ``F.cross_entropy(logits.float(), target, ...)``.

    Raises:
        ValueError: ``target`` does not match ``logits`` in shape or kind.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be (N, K), got shape {tuple(logits.shape)}")
    if target.is_floating_point():
        if target.shape != logits.shape:
            raise ValueError(
                f"soft labels must have the logits' shape {tuple(logits.shape)}, "
                f"got {tuple(target.shape)}"
            )
        target = target.float()
    elif target.dtype == torch.bool or target.shape != logits.shape[:1]:
        raise ValueError(
            f"hard labels must be integer class indices of shape ({logits.shape[0]},), "
            f"got {target.dtype} {tuple(target.shape)}"
        )
    else:
        target = target.long()
    return F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing)


def param_groups(model: nn.Module, *, weight_decay: float) -> list[dict]:
    """Split parameters into groups by weight decay and learning-rate factor.

    Biases, norm weights (all parameters with fewer than two dimensions) and the names in
    ``model.no_weight_decay()`` (position embedding, CLS token) get no weight decay. Names
    starting with a prefix of ``model.lr_scales()`` (the classifier's probe path) go to
    groups whose ``lr_scale`` multiplies the scheduled learning rate; every group has one
    (1.0 by default), and empty groups are left out.
    """
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    scales: dict[str, float] = model.lr_scales() if hasattr(model, "lr_scales") else {}
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        scale = next((f for prefix, f in scales.items() if name.startswith(prefix)), 1.0)
        decay = 0.0 if param.ndim <= 1 or name in skip else weight_decay
        groups.setdefault((scale, decay), []).append(param)
    return [
        {"params": params, "weight_decay": decay, "lr_scale": scale}
        for (scale, decay), params in sorted(groups.items(), key=lambda kv: (kv[0][0], -kv[0][1]))
    ]


def create_optimizer(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float = 0.05,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` (the optimizer of the paper's recipes)."""
    return torch.optim.AdamW(param_groups(model, weight_decay=weight_decay), lr=lr, betas=betas)


def lr_at(step: int, *, total: int, warmup: int, base_lr: float, min_lr: float = 0.0) -> float:
    """Learning rate at ``step``: linear warm-up over ``warmup`` steps, then cosine decay.

    Args:
        step: 0-based optimizer step.
        total: total number of steps (the cosine reaches ``min_lr`` there).
        warmup: warm-up steps (``0``: none).
        base_lr: peak learning rate.
        min_lr: final learning rate.
    """
    if total < 1 or not 0 <= warmup <= total:
        raise ValueError(f"need total >= 1 and 0 <= warmup <= total, got {total=}, {warmup=}")
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))
