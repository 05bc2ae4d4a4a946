"""Operations on whole datasets: :mod:`~loffdata.ops.verify` (decode and check everything)
and :mod:`~loffdata.ops.convert` (derive a dataset from a dataset)."""

from __future__ import annotations

__all__: list[str] = []
