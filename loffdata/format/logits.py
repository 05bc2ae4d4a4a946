"""Teacher logits stored as extras: full, or top-k compressed (indices + float16 values).

A dataset reinforced with a teacher (``tools/shard.py --teacher MODEL``) carries, per sample,
``A`` teacher targets (``A`` image-space augmentations of the image; ``A = 1``: the image
itself) over ``K`` classes, in one of two layouts:

- full: extra ``logits``, float16 ``(A, K)``: ``2 * A * K`` bytes a sample;
- top-k: extra ``logits`` float16 ``(A, k)`` holding the ``k`` largest logits in descending
  order, and extra ``logits_index`` ``(A, k)`` with their class indices (int16 when
  ``K <= 32767``, else int32): ``4 * A * k`` bytes (``6 * A * k`` with int32).

The number of classes ``K`` of a top-k layout is not stored per sample; the dataset's
``num_classes`` gives it. numpy only (``import loffdata`` stays light).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = [
    "INDEX_EXTRA",
    "LOGITS_EXTRA",
    "decode_logits",
    "encode_logits",
    "index_dtype",
    "logits_bytes",
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


def decode_logits(
    extras: Mapping[str, np.ndarray], *, num_classes: int, fill: float = -np.inf
) -> np.ndarray:
    """Dense ``(A, num_classes)`` float32 logits of one sample's extras.

    Classes outside a top-k layout get ``fill`` (``-inf``: no teacher mass after a softmax).

    Raises:
        ValueError: a missing ``logits`` extra, mismatched shapes or an index out of range.
    """
    if LOGITS_EXTRA not in extras:
        raise ValueError(f"no {LOGITS_EXTRA!r} extra: this dataset was not written with a teacher")
    values = np.asarray(extras[LOGITS_EXTRA], dtype=np.float32)
    values = values[None] if values.ndim == 1 else values
    if INDEX_EXTRA not in extras:
        if values.shape[-1] != num_classes:
            raise ValueError(f"full logits have {values.shape[-1]} classes, expected {num_classes}")
        return values
    idx = np.asarray(extras[INDEX_EXTRA]).astype(np.int64)
    idx = idx[None] if idx.ndim == 1 else idx
    if idx.shape != values.shape:
        raise ValueError(
            f"{INDEX_EXTRA} shape {idx.shape} does not match {LOGITS_EXTRA} shape {values.shape}"
        )
    if idx.size and (idx.min() < 0 or idx.max() >= num_classes):
        raise ValueError(f"{INDEX_EXTRA} holds a class outside [0, {num_classes})")
    dense = np.full((values.shape[0], num_classes), fill, dtype=np.float32)
    np.put_along_axis(dense, idx, values, axis=1)
    return dense


def logits_bytes(*, num_classes: int, topk: int | None = None, targets: int = 1) -> int:
    """Payload bytes a sample spends on teacher logits (msgpack headers not counted)."""
    if topk is None or topk >= num_classes:
        return 2 * targets * num_classes
    return (2 + index_dtype(num_classes).itemsize) * targets * topk
