"""A batch and its buffer: what the consumer gets, and the one owner of a pooled buffer's life.

:class:`Batch` / :class:`BatchWithExtras` are what the training loop sees
(``features, labels = batch``), and they say what they hold: ``batch.keys`` (sample keys)
and ``batch.indices`` (global sample indices, a host ``int64`` tensor), one per row.

:class:`LoadedBatch` is the loader's side of one batch, from its arrival from a worker to the
hand-back of its pooled buffer. It keeps payload tensors apart from control data (the slot,
keys, indices, the copy's event) and is the only code that pins, registers, copies to the
device, records streams and releases; :class:`HostRegistry` keeps page-locked registrations
balanced. Every CUDA call goes through a :class:`~loffdata.loader.device.Gpu`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import torch

from loffdata.compat import storage_use_count
from loffdata.loader.device import Gpu

__all__ = [
    "Batch",
    "BatchWithExtras",
    "LoadedBatch",
    "HostRegistry",
    "CONTROL_KEYS",
    "delivered_batch",
    "own_view",
]

_log = logging.getLogger("loffdata.loader.batch")

#: keys of a worker's batch dict that are control data, never payload
CONTROL_KEYS = frozenset({"slot", "ref", "key", "index", "host", "copied"})


class _Pair(NamedTuple):
    features: torch.Tensor
    labels: torch.Tensor


class _Triple(NamedTuple):
    features: torch.Tensor
    labels: torch.Tensor
    extras: dict[str, torch.Tensor]


class Batch(_Pair):
    """A batch as the training loop sees it: ``features, labels = batch``; ``keys`` and
    ``indices`` name its samples, row by row (empty / ``None`` when not known)."""

    def __new__(
        cls,
        features: torch.Tensor,
        labels: torch.Tensor,
        *,
        keys: Iterable[str] = (),
        indices: torch.Tensor | None = None,
    ) -> Batch:
        self = super().__new__(cls, features, labels)
        self.keys, self.indices = list(keys), indices
        return self


class BatchWithExtras(_Triple):
    """A batch with the extra tensors of the dataset (``return_extras=True``); ``keys`` and
    ``indices`` as in :class:`Batch`."""

    def __new__(
        cls,
        features: torch.Tensor,
        labels: torch.Tensor,
        extras: dict[str, torch.Tensor],
        *,
        keys: Iterable[str] = (),
        indices: torch.Tensor | None = None,
    ) -> BatchWithExtras:
        self = super().__new__(cls, features, labels, extras)
        self.keys, self.indices = list(keys), indices
        return self


class HostRegistry:
    """Page-locks host tensors in place (``cudaHostRegister``), once per storage, and undoes it.

    Balanced by construction: its owner ties :meth:`clear` to its own life
    (``weakref.finalize``) and calls it before the buffers can be unmapped. It keeps no
    reference to the tensors (that would change the use counts the loader watches). A
    refused registration clears CUDA's error state and is recorded in :attr:`failures`; a
    refused unregistration in :attr:`errors`.
    """

    def __init__(self, gpu: Gpu):
        self.gpu = gpu
        self._ptrs: dict[int, int] = {}  # data_ptr -> bytes registered
        self.failures: list[str] = []
        self.errors: list[str] = []

    def __len__(self) -> int:
        return len(self._ptrs)

    def register(self, t: torch.Tensor) -> bool:
        """Page-locks the storage of ``t`` (no-op if done already); False if CUDA refused."""
        storage = t.untyped_storage()
        ptr, size = storage.data_ptr(), storage.nbytes()
        if ptr in self._ptrs or size == 0:
            return True
        code = self.gpu.host_register(ptr, size)
        if code != 0:
            cleared = self.gpu.last_error()  # else the next kernel launch reports this error
            why = (
                f"cudaHostRegister of {size} bytes returned {code} (error state cleared: {cleared})"
            )
            self.failures.append(why)
            _log.warning("%s; this batch is copied to pinned memory instead", why)
            return False
        self._ptrs[ptr] = size
        return True

    def forget(self, tensors: Iterable[torch.Tensor]) -> None:
        """Undoes the registration of these tensors' storages (before they are dropped; no
        copy may still read them)."""
        for t in tensors:
            ptr = t.untyped_storage().data_ptr()
            if ptr in self._ptrs:
                self._unregister(ptr)
                del self._ptrs[ptr]

    def clear(self) -> None:
        """Waits for the device, then undoes every registration (before buffers are unmapped)."""
        if not self._ptrs:
            return
        self.gpu.synchronize()  # no copy may still read a buffer
        for ptr in list(self._ptrs):
            self._unregister(ptr)
            del self._ptrs[ptr]

    def _unregister(self, ptr: int) -> None:
        code = self.gpu.host_unregister(ptr)
        if code != 0:
            self.gpu.last_error()
            self.errors.append(f"cudaHostUnregister(0x{ptr:x}) returned {code}")
            _log.warning("cudaHostUnregister(0x%x) returned %d", ptr, code)


class LoadedBatch:
    """One worker batch, owned by the loader until its pooled buffer goes back to the worker.

    Args:
        tensors: the batch's host tensors by name (payload and the ``index`` tensor).
        keys: sample keys, one per row.
        slot: ``(worker, slot)`` of a pooled buffer, ``None`` for a buffer of its own.
    """

    def __init__(
        self, tensors: dict[str, torch.Tensor], keys: list[str], slot: tuple[int, int] | None
    ):
        self.tensors, self.keys, self.slot = tensors, keys, slot
        self.payload = {k: v for k, v in tensors.items() if k not in CONTROL_KEYS}
        self.indices: torch.Tensor | None = tensors.get("index")
        self.copied: Any = None  # event passed once the device copy no longer reads the host
        self._device: dict[str, torch.Tensor] | None = None
        self._staged: dict[str, torch.Tensor] | None = None
        self._idle_counts: list[tuple[torch.Tensor, int]] = []

    @classmethod
    def from_worker(
        cls, raw: dict[str, Any], mapped: dict[tuple[int, int], dict[str, torch.Tensor]]
    ) -> LoadedBatch:
        """A worker's batch dict (or its reference to a pooled buffer in ``mapped``) as a batch."""
        slot = tuple(raw["slot"]) if raw.get("slot") is not None else None
        source = mapped[slot] if raw.get("ref") else raw
        tensors = {k: v for k, v in source.items() if isinstance(v, torch.Tensor)}
        return cls(tensors, list(raw.get("key", ())), slot)

    # -- to the device --------------------------------------------------------------------

    def to_device(self, gpu: Gpu, stream: Any, registry: HostRegistry | None) -> None:
        """Issues the copy of the payload on ``stream`` (non-blocking, from page-locked memory)
        and records :attr:`copied` after it; the indices stay on the host."""
        source = self._page_locked(gpu, registry)
        with gpu.use(stream):
            self._device = {k: gpu.copy(v) for k, v in source.items()}
            self.copied = gpu.event()
            gpu.record(self.copied, stream)
        self._staged = source  # pinned copies live until the copy has read them

    def _page_locked(self, gpu: Gpu, registry: HostRegistry | None) -> dict[str, torch.Tensor]:
        """The payload in page-locked memory: a pooled buffer registered in place (opt-in,
        ``registry``), or pinned already (the pin thread), or copied to pinned memory."""
        if (
            registry is not None
            and self.slot is not None
            and all(registry.register(v) for v in self.payload.values())
        ):
            return self.payload
        return {k: v if gpu.is_pinned(v) else gpu.pin(v) for k, v in self.payload.items()}

    def ready(self, gpu: Gpu | None) -> dict[str, torch.Tensor]:
        """The payload, usable on the current stream (which waits for the copy; the host does
        not), its tensors recorded as used there. On the CPU: the host payload."""
        if gpu is None:
            return self.payload
        if self._device is None:
            raise RuntimeError("LoadedBatch.ready() before to_device()")
        current = gpu.current_stream()
        gpu.wait(current, self.copied)
        out, self._device = self._device, None
        for v in out.values():
            gpu.record_stream(v, current)
        return out

    # -- back to the worker ---------------------------------------------------------------

    def lease(self, idle_use_count: Callable[[str], int]) -> None:
        """Remembers the use count of each host tensor when nothing outside the loader uses it."""
        self._idle_counts = [(t, idle_use_count(k)) for k, t in self.tensors.items()]

    def releasable(self, gpu: Gpu | None) -> bool:
        """Whether the device copy is done and nothing outside the loader uses the buffer."""
        if self.copied is not None and not gpu.query(self.copied):
            return False
        if not all(storage_use_count(t) <= base for t, base in self._idle_counts):
            return False
        self._staged = None
        return True


# -- what the consumer gets -----------------------------------------------------------------


def delivered_batch(
    loaded: LoadedBatch,
    x: torch.Tensor,
    y: torch.Tensor,
    payload: dict[str, torch.Tensor],
    *,
    views: int,
    extras: Iterable[str] | None,
) -> Batch | BatchWithExtras:
    """The batch the consumer gets: ``x`` and ``y``, the keys and indices of ``loaded``
    (each repeated ``views`` times), and with ``extras`` those tensors of ``payload``."""
    x, y = own_view(x, payload["features"]), own_view(y, payload["label"])
    keys = [k for k in loaded.keys for _ in range(views)] if views > 1 else loaded.keys
    names = {"keys": keys, "indices": _repeat(loaded.indices.clone(), views)}
    if extras is None:
        return Batch(x, y, **names)
    more = {k: own_view(_repeat(payload[k], views), payload[k]) for k in extras}
    return BatchWithExtras(x, y, more, **names)


def _repeat(t: torch.Tensor, views: int) -> torch.Tensor:
    return t.repeat_interleave(views, dim=0) if views > 1 else t


def own_view(t: torch.Tensor, buffer: torch.Tensor) -> torch.Tensor:
    """``t``, as a tensor object of its own if it is the batch ``buffer`` itself.

    Handing out the loader's own tensor object would hide the consumer's use of a pooled
    buffer; a separate view counts in the storage's use count, which
    :meth:`~loffdata.loader.leases.BufferLeases.give_back` watches.
    """
    return t.view(t.shape) if t is buffer else t
