"""Shard format version 1: how one sample maps to tar members (see ``docs/format.md``).

A sample with key ``K`` is a run of consecutive tar members::

    K.feat.msgpack     features, a codec payload (C, H, W)            required
    K.cls              label as ASCII decimal, e.g. b"3"               optional
    K.<name>.msgpack   extra tensor (pooled/CLS vector, logits ...)    optional

Keys match ``[A-Za-z0-9_-]{1,80}`` (no dots: the first dot ends the key, as in webdataset).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from loffdata.errors import CodecError, SampleError
from loffdata.format import codec

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "FEATURES_SUFFIX",
    "LABEL_SUFFIX",
    "Sample",
    "check_key",
    "split_member_name",
    "encode_sample",
    "decode_sample",
    "features_match",
]

FORMAT_NAME = "loffdata.shards"
FORMAT_VERSION = 1
FEATURES_SUFFIX = "feat.msgpack"
LABEL_SUFFIX = "cls"
_EXTRA_SUFFIX = ".msgpack"
_KEY = re.compile(r"[A-Za-z0-9_-]{1,80}")
_EXTRA_NAME = re.compile(r"[A-Za-z0-9_-]{1,40}")
_LABEL = re.compile(rb"\s*(-?[0-9]{1,20})\s*")
_INT64 = (-(1 << 63), (1 << 63) - 1)


@dataclass
class Sample:
    """One decoded sample.

    Attributes:
        key: the sample key.
        features: the feature map (numpy view, or :class:`~loffdata.format.codec.Quantized`).
        label: integer label, or ``None`` for unlabelled data.
        extras: extra tensors by name.
    """

    key: str
    features: Any
    label: int | None = None
    extras: dict[str, Any] = field(default_factory=dict)


def check_key(key: str) -> str:
    """Returns ``key`` if it is a valid sample key, else raises ``ValueError``."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ValueError(f"invalid sample key {key!r}: use 1-80 of [A-Za-z0-9_-]")
    return key


def split_member_name(name: str) -> tuple[str, str]:
    """Splits a member name ``"K.feat.msgpack"`` into ``("K", "feat.msgpack")``."""
    base = name.rsplit("/", 1)[-1]
    key, dot, suffix = base.partition(".")
    return key, suffix if dot else ""


def encode_sample(
    key: str,
    features: Any,
    *,
    label: int | None = None,
    extras: Mapping[str, Any] | None = None,
    dtype: str | None = None,
) -> list[tuple[str, bytes]]:
    """Encodes one sample as ``(member name, bytes)`` pairs in format order.

    Args:
        key: sample key, see :func:`check_key`.
        features: array or tensor (C, H, W).
        label: optional integer label.
        extras: optional extra tensors by name (stored in their own dtype).
        dtype: storage dtype of the features (``None`` keeps the input dtype).
    """
    check_key(key)
    members = [(f"{key}.{FEATURES_SUFFIX}", codec.encode(features, dtype=dtype))]
    if label is not None:
        members.append((f"{key}.{LABEL_SUFFIX}", str(int(label)).encode("ascii")))
    for name, value in (extras or {}).items():
        if not _EXTRA_NAME.fullmatch(name) or name in ("feat", LABEL_SUFFIX):
            raise ValueError(f"invalid extra tensor name {name!r}")
        members.append((f"{key}.{name}{_EXTRA_SUFFIX}", codec.encode(value)))
    return members


def decode_sample(key: str, members: Mapping[str, bytes], *, shard: str | None = None) -> Sample:
    """Decodes the members of one sample (suffix -> bytes).

    Raises:
        SampleError: naming ``shard`` and ``key`` when anything is missing or malformed.
    """
    if FEATURES_SUFFIX not in members:
        raise SampleError(
            f"sample has no {FEATURES_SUFFIX!r} member (has {sorted(members)})",
            shard=shard,
            key=key,
        )
    sample = Sample(
        key=key, features=_decode(members[FEATURES_SUFFIX], FEATURES_SUFFIX, shard, key)
    )
    for suffix, data in members.items():
        if suffix == LABEL_SUFFIX:
            sample.label = _decode_label(data, shard, key)
        elif suffix != FEATURES_SUFFIX and suffix.endswith(_EXTRA_SUFFIX):
            sample.extras[suffix[: -len(_EXTRA_SUFFIX)]] = _decode(data, suffix, shard, key)
    return sample


def _decode(data: bytes, suffix: str, shard: str | None, key: str) -> Any:
    try:
        return codec.decode(data)
    except CodecError as err:
        raise SampleError(f"cannot decode member {suffix!r}: {err}", shard=shard, key=key) from None


def _decode_label(data: bytes, shard: str | None, key: str) -> int:
    """An ASCII decimal label within int64 (what a batch's label tensor holds)."""
    raw = bytes(data[:64]) if len(data) <= 64 else b""
    match = _LABEL.fullmatch(raw)
    if match is None:
        raise SampleError(
            f"label {bytes(data[:20])!r} is not an ASCII integer", shard=shard, key=key
        )
    value = int(match.group(1))
    if not _INT64[0] <= value <= _INT64[1]:
        raise SampleError(f"label {value} is outside int64", shard=shard, key=key)
    return value


def features_match(features: Any, shape: tuple[int, ...], dtype: str) -> str | None:
    """Returns ``None`` if ``features`` has ``shape``/``dtype``, else a description of the
    mismatch."""
    got_dtype = "int8" if isinstance(features, codec.Quantized) else _dtype_name(features)
    got_shape = tuple(features.shape)
    if got_shape != tuple(shape) or got_dtype != dtype:
        return f"features are {got_dtype}{list(got_shape)}, manifest says {dtype}{list(shape)}"
    return None


def _dtype_name(arr: np.ndarray) -> str:
    return codec.dtype_name(arr) or str(arr.dtype)
