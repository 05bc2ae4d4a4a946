"""Teacher logits stored as extras: full, or top-k compressed (indices + float16 values).

A dataset reinforced with a teacher (``tools/shard.py --teacher MODEL``) carries, per sample,
``A`` teacher targets (``A`` image-space augmentations of the image; ``A = 1``: the image
itself) over ``K`` classes, in one of two layouts:

- full: extra ``logits``, float16 ``(A, K)``: ``2 * A * K`` bytes a sample;
- top-k: extra ``logits`` float16 ``(A, k)`` holding the ``k`` largest logits in descending
  order, and extra ``logits_index`` ``(A, k)`` with their class indices (int16 when
  ``K <= 32767``, else int32): ``4 * A * k`` bytes (``6 * A * k`` with int32).

The number of classes ``K`` of a top-k layout is not stored per sample; the dataset's
``num_classes`` gives it. The trainer reads them back as a teacher distribution
(:func:`loffdata.train.distill.teacher_probs`). numpy only (``import loffdata`` stays light).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "INDEX_EXTRA",
    "LOGITS_EXTRA",
    "encode_logits",
    "index_dtype",
]

LOGITS_EXTRA = "logits"
INDEX_EXTRA = "logits_index"


def index_dtype(num_classes: int) -> np.dtype:
    """int16 while every class index fits, else int32."""
    return np.dtype("<i2") if num_classes <= np.iinfo(np.int16).max else np.dtype("<i4")


def encode_logits(logits: np.ndarray, *, topk: int | None = None) -> dict[str, np.ndarray]:
    """Extras of one sample's teacher logits.

    Args:
        logits: ``(A, K)`` (or ``(K,)``, taken as ``A = 1``) float logits.
        topk: keep the ``topk`` largest per row; ``None`` or ``>= K``: store them all.

    Returns:
        ``{"logits": float16 (A, k)}`` plus ``{"logits_index": (A, k)}`` when compressed.

    Raises:
        ValueError: bad shape, non-finite logits or ``topk < 1``.
    """
    arr = np.asarray(logits, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ValueError(f"teacher logits must be (A, K) or (K,), got shape {np.shape(logits)}")
    if not np.isfinite(arr).all():
        raise ValueError("teacher logits must be finite")
    classes = arr.shape[1]
    if topk is not None and topk < 1:
        raise ValueError(f"topk must be >= 1 or None, got {topk}")
    if topk is None or topk >= classes:
        return {LOGITS_EXTRA: arr.astype(np.float16)}
    idx = np.argsort(-arr, axis=1, kind="stable")[:, :topk]
    values = np.take_along_axis(arr, idx, axis=1)
    return {LOGITS_EXTRA: values.astype(np.float16), INDEX_EXTRA: idx.astype(index_dtype(classes))}
