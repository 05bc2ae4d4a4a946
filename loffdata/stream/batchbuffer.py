"""One batch preallocated as torch tensors, its rows filled in place from decoded samples.

Inside a worker the tensors live in shared memory (or in a slot of the consumer's
:class:`~loffdata.stream.batching.SharedArena`), so a whole batch crosses the process
boundary as shared-memory handles, never single samples.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from loffdata.compat import new_shared_storage, storage_use_count
from loffdata.format import codec
from loffdata.format.sample import Sample
from loffdata.stream.sources import ShardSet

__all__ = ["BatchBuffer"]


def _numpy_view(t: torch.Tensor) -> np.ndarray:
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(codec.DTYPES["bfloat16"])
    return t.numpy()


class BatchBuffer:
    """One batch preallocated as torch tensors (in shared memory inside workers), filled in
    place."""

    def __init__(
        self,
        shards: ShardSet,
        size: int,
        shared: bool,
        dtype: str | None = None,
        given: dict[str, torch.Tensor] | None = None,
    ):
        self.size, self.slot = size, None
        self.tensors: dict[str, torch.Tensor] = {}
        self._given = given or {}  # preallocated tensors (a :class:`SharedArena` slot)
        spec = shards.features
        self.converts = dtype is not None and dtype != spec.dtype
        self._add("features", (size, *spec.shape), dtype or spec.dtype, shared)
        if spec.dtype == "int8" and not self.converts:
            self._add("scale", (size, spec.shape[0] if spec.shape else 1), "float32", shared)
        self._add("label", (size,), "int64", shared)
        self._add("index", (size,), "int64", shared)
        for name, extra in shards.extras.items():
            self._add(name, (size, *extra.shape), extra.dtype, shared)
        self.extras = list(shards.extras)
        self.views = {k: _numpy_view(t) for k, t in self.tensors.items()}
        self.keys: list[str] = [""] * size
        self._row_bytes = memoryview(self.views["features"].view(np.uint8)).cast("B")
        self._row_size = self.tensors["features"][0].nbytes if size else 0
        self._data_ptr = self.tensors["features"].data_ptr()
        #: use counts of the tensors while only this buffer holds them (views included)
        self.idle_counts = {k: storage_use_count(t) for k, t in self.tensors.items()}

    def _in_row(self, feats: np.ndarray, i: int) -> bool:
        """Whether ``feats`` is row ``i`` itself (read straight into it)."""
        return (
            feats.nbytes == self._row_size
            and feats.ctypes.data == self._data_ptr + i * self._row_size
        )

    def _add(self, name: str, shape: tuple[int, ...], dtype: str, shared: bool) -> None:
        dt = codec.torch_dtype(dtype)
        if name in self._given:
            self.tensors[name] = self._given[name]
            return
        if not shared:
            self.tensors[name] = torch.empty(shape, dtype=dt)
            return
        # allocated in shared memory at once: ``share_memory_()`` would allocate privately,
        # then copy every page into a new shared segment (2-3x the cost of a fresh batch)
        nbytes = max(
            1, int(np.prod(shape, dtype=np.int64)) * torch.empty((), dtype=dt).element_size()
        )
        storage = new_shared_storage(nbytes)
        self.tensors[name] = torch.empty(0, dtype=dt).set_(storage, 0, shape)

    def put(self, i: int, gid: int, sample: Sample) -> None:
        """Copies a decoded sample into row ``i`` (one copy per tensor, from the payload view)."""
        v = self.views
        feats = sample.features
        if isinstance(feats, codec.Quantized):
            if self.converts:
                np.copyto(v["features"][i], feats.dequantize(), casting="unsafe")
            else:
                np.copyto(v["features"][i], feats.values)
                np.copyto(v["scale"][i], feats.scale)
        elif self.converts and feats.flags.writeable:  # torch converts with SIMD, numpy does not
            self.tensors["features"][i].copy_(codec.to_torch(feats))
        elif not self._in_row(feats, i):  # else it was read straight into the row
            np.copyto(v["features"][i], feats, casting="unsafe")
        v["label"][i] = -1 if sample.label is None else sample.label
        v["index"][i] = gid
        self.keys[i] = sample.key
        for name in self.extras:
            value = sample.extras[name]  # presence and shape checked when decoded
            np.copyto(
                v[name][i],
                value.dequantize() if isinstance(value, codec.Quantized) else value,
                casting="unsafe",
            )

    def feature_bytes(self, i: int) -> memoryview:
        """Row ``i`` of the features as a writable byte view (for reading data into it)."""
        return self._row_bytes[i * self._row_size : (i + 1) * self._row_size]

    def copy_row(self, i: int, src: BatchBuffer, j: int) -> None:
        """Row ``i`` becomes a copy of row ``j`` of ``src``."""
        for name, view in self.views.items():
            view[i] = src.views[name][j]
        self.keys[i] = src.keys[j]

    def result(self) -> dict[str, Any]:
        """The batch as handed out: its tensors, ``key`` and, if pooled, ``slot``."""
        out = {**self.tensors, "key": list(self.keys)}
        if self.slot is not None:
            out["slot"] = self.slot
        return out
