"""Host batches to the GPU: which way, and the side stream that overlaps copy and compute.

Two ways for a worker-built batch to reach a CUDA device (:func:`select_transfer`):

- ``"pin-thread"`` (the default, the well-trodden path of timm's ``PrefetchLoader``): the
  DataLoader's pin thread copies every batch into pinned memory (torch's caching host
  allocator), and that copy goes to the device with ``non_blocking=True`` on a side stream;
  the consumer's stream waits on an event recorded after it. On a device without a pin
  thread (the CUDA stand-in) the loader pins the batch itself.
- ``"register"`` (opt-in, until ``gpu-check`` has measured it faster on a GPU): the pooled
  shared-memory batch buffers, which the main process maps once and keeps, are page-locked
  in place with ``cudaHostRegister`` (:class:`~loffdata.loader.batch.HostRegistry`) and
  copied straight to the device: no pinned copy of the batch.

On a CPU device nothing is transferred (``"none"``). The copies themselves, the event and
``record_stream`` are :class:`~loffdata.loader.batch.LoadedBatch`'s.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from loffdata.devices import resolve_cuda
from loffdata.loader.batch import HostRegistry, LoadedBatch
from loffdata.loader.device import CudaGpu, Gpu

__all__ = ["TRANSFERS", "select_transfer", "resolve_device", "device_batches"]

#: The accepted values of a loader's ``transfer`` setting.
TRANSFERS = ("auto", "register", "pin-thread")

#: kept for callers of the old name: the one device rule (:mod:`loffdata.devices`)
resolve_device = resolve_cuda


def select_transfer(gpu: Gpu | torch.device | None, requested: str = "auto") -> str:
    """How host batches reach ``gpu``: ``"none"``, ``"pin-thread"`` or ``"register"``.

    Args:
        gpu: where batches are delivered (``None`` or a non-CUDA ``torch.device``: the CPU).
        requested: ``"auto"`` (the pin thread), ``"pin-thread"`` or ``"register"`` (opt-in).

    Raises:
        ValueError: an unknown ``requested``, or ``"register"`` where it is not possible.
    """
    if requested not in TRANSFERS:
        raise ValueError(f"transfer must be one of {TRANSFERS}, got {requested!r}")
    if not isinstance(gpu, Gpu) and (gpu is None or torch.device(gpu).type != "cuda"):
        return "none"
    if requested != "register":
        return "pin-thread"
    if not (gpu if isinstance(gpu, Gpu) else CudaGpu(gpu)).can_register():
        raise ValueError("transfer='register' needs CUDA with cudaHostRegister")
    return "register"


def device_batches(
    hosts: Iterator[LoadedBatch], gpu: Gpu, *, registry: HostRegistry | None
) -> Iterator[tuple[LoadedBatch, dict]]:
    """``(batch, device payload)`` pairs, copying batch k+1 on a side stream while batch k
    is used; the payload is usable on the consumer's current stream."""
    stream, pending = gpu.stream(), None
    for batch in hosts:
        batch.to_device(gpu, stream, registry)
        if pending is not None:
            yield pending, pending.ready(gpu)
        pending = batch
    if pending is not None:
        yield pending, pending.ready(gpu)
