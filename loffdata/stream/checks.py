"""The one sample check of every read path: sequential, batched, by-sample and ``ds[i]``.

A decoded sample is delivered only after :func:`check_sample` has compared it with the
dataset's :class:`SampleRules`: the key rule (``[A-Za-z0-9_-]{1,80}``, as writers use), the feature
spec, the label range (``classes``), the
declared extras (shape and dtype; present in every sample when batched), teacher logits
(their classes and top-k class indices) and, in a mix
whose classes are unified, the label's place in the union. Every reader calls it, so a
sample that one path refuses is refused by all of them, with the same message naming the
shard and the key (``tests/stream/test_sample_checks.py`` checks that path by path).
:func:`sample_position` is the one rule for what ``ds[i]`` accepts as ``i``.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from loffdata.errors import LoffError, SampleError
from loffdata.format import codec
from loffdata.format.logits import INDEX_EXTRA, LOGITS_EXTRA
from loffdata.format.manifest import TensorSpec
from loffdata.format.sample import Sample, check_key, features_match
from loffdata.stream.sources import ShardSet

__all__ = ["SampleRules", "IndexTypeError", "check_sample", "sample_position"]


class IndexTypeError(LoffError, TypeError):
    """``ds[i]`` with an ``i`` that is not an integer (a float, a string, a bool)."""


@dataclass(frozen=True)
class SampleRules:
    """What a delivered sample must be.

    Attributes:
        features: the feature spec (shape and storage dtype).
        num_classes: labels must lie in ``[0, num_classes)``; ``None``: any int64.
        extras: declared extra tensors by name (shape and dtype).
        batched: every declared extra must be present (a batch has a row for it).
        labels: a mix's unification table (stored label -> union label), or ``None``.
    """

    features: TensorSpec
    num_classes: int | None = None
    extras: Mapping[str, TensorSpec] = field(default_factory=dict)
    batched: bool = False
    labels: np.ndarray | None = None

    @classmethod
    def of(
        cls, shards: ShardSet, *, batched: bool = False, labels: np.ndarray | None = None
    ) -> SampleRules:
        """The rules of a shard set (its manifest's specs and classes)."""
        n = len(labels) if labels is not None else shards.num_classes
        return cls(shards.features, n, dict(shards.extras), batched, labels)


def check_sample(sample: Sample, rules: SampleRules, *, shard: str) -> Sample:
    """Returns ``sample`` (its label unified if ``rules.labels``) if it follows ``rules``.

    Raises:
        SampleError: naming ``shard`` and the sample's key, for the first rule it breaks.
    """
    try:
        check_key(sample.key)  # one key rule for writers, readers, verify and convert
    except ValueError as err:
        raise SampleError(str(err), shard=shard, key=sample.key) from None
    problem = features_match(sample.features, rules.features.shape, rules.features.dtype)
    if problem:
        raise SampleError(problem, shard=shard, key=sample.key)
    _check_label(sample, rules, shard)
    for name, spec in rules.extras.items():
        _check_extra(sample, name, spec, rules.batched, shard)
    if LOGITS_EXTRA in sample.extras:
        _check_logits(sample, rules.num_classes, shard)
    if rules.labels is not None and sample.label is not None:
        sample.label = int(rules.labels[sample.label])
    return sample


def _check_label(sample: Sample, rules: SampleRules, shard: str) -> None:
    n = rules.num_classes
    if n is not None and sample.label is not None and not 0 <= sample.label < n:
        raise SampleError(
            f"label {sample.label} outside the {n} classes", shard=shard, key=sample.key
        )


def _check_extra(sample: Sample, name: str, spec: TensorSpec, batched: bool, shard: str) -> None:
    value = sample.extras.get(name)
    if value is None:
        if batched:
            raise SampleError(
                f"sample has no extra {name!r}, which the manifest declares",
                shard=shard,
                key=sample.key,
            )
        return
    want = codec.DTYPES.get(spec.dtype)
    quantized = isinstance(value, codec.Quantized)
    same_dtype = spec.dtype == "int8" if quantized else want is None or value.dtype == want
    if tuple(value.shape) != tuple(spec.shape) or not same_dtype:
        got = "int8" if quantized else (codec.dtype_name(value) or str(value.dtype))
        raise SampleError(
            f"extra {name!r} is {got}{list(value.shape)}, manifest says "
            f"{spec.dtype}{list(spec.shape)}",
            shard=shard,
            key=sample.key,
        )


def _check_logits(sample: Sample, num_classes: int | None, shard: str) -> None:
    """Teacher logits (:mod:`loffdata.format.logits`): ``K`` classes when full, class indices
    in ``[0, K)`` of the logits' shape when top-k; checked here, on the host, so that a bad
    index never reaches torch (on CUDA, a device assert naming nothing)."""
    values, index = sample.extras[LOGITS_EXTRA], sample.extras.get(INDEX_EXTRA)
    if index is None:
        if num_classes is not None and values.shape[-1:] != (num_classes,):
            raise SampleError(
                f"teacher logits have {list(values.shape)[-1:]} classes, the dataset {num_classes}",
                shard=shard,
                key=sample.key,
            )
        return
    if tuple(index.shape) != tuple(values.shape) or not np.issubdtype(index.dtype, np.integer):
        raise SampleError(
            f"{INDEX_EXTRA} is {index.dtype}{list(index.shape)}, {LOGITS_EXTRA} is "
            f"{list(values.shape)}",
            shard=shard,
            key=sample.key,
        )
    top = num_classes if num_classes is not None else np.iinfo(np.int64).max
    if index.size and (int(index.min()) < 0 or int(index.max()) >= top):
        bad = int(index.min()) if int(index.min()) < 0 else int(index.max())
        raise SampleError(
            f"{INDEX_EXTRA} holds class {bad}, outside [0, {num_classes})",
            shard=shard,
            key=sample.key,
        )


def sample_position(i: Any, n: int) -> int:
    """The position ``i`` names in ``n`` samples (negative counts from the end).

    Integers only: Python and numpy ints, and 0-d integer tensors. Floats, strings and
    bools are refused rather than rounded or parsed.

    Raises:
        IndexTypeError: ``i`` is not an integer.
        IndexError: ``i`` is outside the samples.
    """
    if isinstance(i, (bool, np.bool_, str, bytes)):
        raise IndexTypeError(f"sample index must be an integer, got {type(i).__name__} {i!r:.40}")
    try:
        k = operator.index(i)
    except TypeError:
        raise IndexTypeError(
            f"sample index must be an integer, got {type(i).__name__} {i!r:.40}"
        ) from None
    if isinstance(k, bool):  # a bool tensor's __index__
        raise IndexTypeError(f"sample index must be an integer, got a boolean {i!r:.40}")
    k = k + n if k < 0 else k
    if not 0 <= k < n:
        raise IndexError(f"sample {i} is outside the dataset's {n} samples")
    return k
