"""Host batches to the GPU: which device, and how a batch gets there without extra copies.

Two ways for a worker-built batch to reach a CUDA device (:func:`select_transfer`):

- ``"register"`` (the default when it is possible): the pooled shared-memory batch buffers,
  which the main process maps once and keeps, are page-locked in place with
  ``cudaHostRegister`` the first time they arrive (:class:`HostRegistry`), then copied
  straight to the device with ``non_blocking=True``. No pin thread, no pinned copy of
  the batch, and batches come back by reference (no file descriptor passed).
- ``"pin-thread"`` (the fallback): the DataLoader's pin thread copies every batch into
  pinned memory from torch's caching host allocator, and that copy goes to the device.

On a CPU device nothing is transferred (``"none"``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["TRANSFERS", "select_transfer", "can_register", "resolve_device", "HostRegistry", "device_batches"]

_log = logging.getLogger("loffdata.loader.transfer")

#: The accepted values of a loader's ``transfer`` setting.
TRANSFERS = ("auto", "register", "pin-thread")


def resolve_device(device: str | torch.device, env: dict[str, str] | None = None) -> torch.device:
    """``device`` with a CUDA index filled in: ``LOCAL_RANK`` under torchrun, else the
    current device; so every DDP rank works on its own GPU, not GPU 0."""
    dev = torch.device(device)
    if dev.type != "cuda" or dev.index is not None:
        return dev
    env = os.environ if env is None else env
    if "LOCAL_RANK" in env:
        return torch.device("cuda", int(env["LOCAL_RANK"]))
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return dev


def can_register() -> bool:
    """Whether host memory can be page-locked in place (a CUDA device and ``cudaHostRegister``)."""
    if not torch.cuda.is_available():
        return False
    return hasattr(torch.cuda.cudart(), "cudaHostRegister")


def select_transfer(device: torch.device, requested: str = "auto", *, register_ok: bool | None = None) -> str:
    """How host batches reach ``device``: ``"none"``, ``"register"`` or ``"pin-thread"``.

    Args:
        device: where batches are delivered.
        requested: ``"auto"`` (register when possible, else the pin thread), ``"register"``
            or ``"pin-thread"``.
        register_ok: whether registering works here (default: :func:`can_register`).

    Raises:
        ValueError: an unknown ``requested``, or ``"register"`` where it is not possible.
    """
    if requested not in TRANSFERS:
        raise ValueError(f"transfer must be one of {TRANSFERS}, got {requested!r}")
    if torch.device(device).type != "cuda":
        return "none"
    if requested == "pin-thread":
        return "pin-thread"
    ok = can_register() if register_ok is None else register_ok
    if ok:
        return "register"
    if requested == "register":
        raise ValueError("transfer='register' needs CUDA with cudaHostRegister")
    return "pin-thread"


class HostRegistry:
    """Page-locks host tensors in place, once per storage, until :meth:`forget` / :meth:`clear`.

    It keeps no reference to the tensors (that would change their storage's use count, which
    the loader watches to hand buffers back): the caller keeps them alive while registered and
    calls :meth:`forget` before it drops one (:meth:`clear` for all).
    """

    def __init__(self) -> None:
        self._ptrs: dict[int, int] = {}  # data_ptr -> bytes registered
        self.failed = 0

    def __len__(self) -> int:
        return len(self._ptrs)

    def register(self, t: torch.Tensor) -> bool:
        """Page-locks the storage of ``t`` (no-op if done already); False if CUDA refused."""
        storage = t.untyped_storage()
        ptr, size = storage.data_ptr(), storage.nbytes()
        if ptr in self._ptrs or size == 0:
            return True
        err = torch.cuda.cudart().cudaHostRegister(ptr, size, 0)
        if int(getattr(err, "value", err)) != 0:
            self.failed += 1
            _log.warning("cudaHostRegister of %d bytes failed (error %s); copying this batch", size, err)
            return False
        self._ptrs[ptr] = size
        return True

    def forget(self, tensors: list[torch.Tensor]) -> None:
        """Undoes the registration of these tensors' storages (before they are dropped)."""
        for t in tensors:
            if self._ptrs.pop(t.untyped_storage().data_ptr(), None) is not None:
                torch.cuda.cudart().cudaHostUnregister(t.untyped_storage().data_ptr())

    def clear(self) -> None:
        """Undoes every registration (before the buffers are unmapped)."""
        for ptr in self._ptrs:
            torch.cuda.cudart().cudaHostUnregister(ptr)
        self._ptrs.clear()


def device_batches(
    hosts: Iterator[dict[str, Any]], device: torch.device, *, register: HostRegistry | None
) -> Iterator[dict[str, Any]]:
    """Host batches -> device batches, copying batch k+1 on a side stream while batch k is used.

    Each device batch carries ``"host"`` (the host batch) and ``"copied"`` (an event that has
    passed once the copy no longer reads the host buffer). With ``register``, pooled batches
    are page-locked in place first; without it they are expected pinned already (pin thread).
    """
    stream, pending = torch.cuda.Stream(device), None
    for host in hosts:
        copied = _copy_async(host, stream, device, register)
        if pending is not None:
            yield _ready(pending, device)
        pending = copied
    if pending is not None:
        yield _ready(pending, device)


def _copy_async(host: dict[str, Any], stream: Any, device: torch.device, register: HostRegistry | None) -> dict:
    """Issues the copy of every tensor but ``index`` (used on the host only)."""
    source = host if register is None else _page_locked(host, register)
    with torch.cuda.stream(stream):
        out = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) and k != "index" else v
               for k, v in source.items()}
        done = torch.cuda.Event()
        done.record(stream)
    out["host"], out["copied"] = host, done
    return out


def _page_locked(host: dict[str, Any], register: HostRegistry) -> dict[str, Any]:
    """The batch as page-locked tensors: pooled buffers registered in place (once), any
    other batch (a final partial one) copied to pinned memory."""
    tensors = {k: v for k, v in host.items() if isinstance(v, torch.Tensor) and k != "index"}
    if "slot" in host and all(register.register(v) for v in tensors.values()):
        return host
    return {**host, **{k: v.pin_memory() for k, v in tensors.items()}}


def _ready(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The batch, usable on the current stream. The host does not wait: the buffer goes back
    to its worker once ``batch["copied"]`` has passed (the loader queries the event)."""
    current = torch.cuda.current_stream(device)
    current.wait_event(batch["copied"])
    for v in batch.values():
        if isinstance(v, torch.Tensor):
            v.record_stream(current)
    return batch
