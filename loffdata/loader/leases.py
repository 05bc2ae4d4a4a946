"""The pooled batch buffers a loader lends to its consumer, and hands back to the workers.

A worker writes each batch into a buffer of its pool and sends it (or, once the loader keeps
it mapped, a reference to it). The loader keeps each delivered buffer on lease until nothing
outside the loader uses its tensors (their storages' use counts, :mod:`loffdata.compat`) and
the device copy has read it; then it clears the buffer's flag in :attr:`BufferLeases.flags`,
shared with the workers, and the worker may fill it again.
"""

from __future__ import annotations

from typing import Any

import torch

from loffdata.compat import storage_use_count
from loffdata.loader.batch import HostRegistry, LoadedBatch
from loffdata.loader.device import Gpu
from loffdata.stream.batching import SharedArena, pool_slots
from loffdata.stream.plan import window_size

__all__ = ["BufferLeases", "release_flags"]

Slot = tuple[int, int]  # (worker, buffer)


def release_flags(dataset: Any, num_workers: int, prefetch_factor: int) -> torch.Tensor:
    """Shared flags (workers x buffers) through which batch buffers go back to the workers."""
    window = window_size(dataset.config.shuffle_buffer, dataset.batch_size)
    slots = pool_slots(window, dataset.batch_size, prefetch_factor)
    return torch.zeros(max(1, num_workers), slots, dtype=torch.int32).share_memory_()


class BufferLeases:
    """The buffers a loader holds: mapped, lent to the consumer, or handed back.

    Args:
        gpu: the loader's device (``None`` on the CPU).
        registry: the buffers registered with CUDA in place (``None`` without).
    """

    def __init__(self, gpu: Gpu | None, registry: HostRegistry | None):
        self.gpu, self.registry = gpu, registry
        #: the flags shared with the workers; ``None``: no buffer is reused
        self.flags: torch.Tensor | None = None
        #: slot -> the tensors of a pooled buffer this loader keeps mapped
        self.mapped: dict[Slot, dict[str, torch.Tensor]] = {}
        #: slot -> the delivered batch whose buffer is still on lease
        self.leases: dict[Slot, LoadedBatch] = {}
        #: (worker, buffer, name) -> use count of an arena tensor that only the loader uses
        self.idle_counts: dict[tuple[int, int, str], int] = {}
        #: use count of a tensor that nothing else shares
        self.lone_count = storage_use_count(torch.empty(1))

    def clear(self) -> None:
        """Forgets every buffer (the workers are gone)."""
        self.mapped, self.leases, self.idle_counts = {}, {}, {}

    def make_arena(self, dataset: Any) -> SharedArena:
        """Every worker's buffers, preallocated before the fork and mapped here from now on."""
        workers, slots = self.flags.shape
        arena = SharedArena(
            dataset.shards,
            batch_size=dataset.batch_size,
            workers=workers,
            slots=slots,
            dtype=dataset.batch_dtype,
        )
        self.idle_counts = {}
        for w in range(workers):
            for s in range(slots):
                tensors = self.mapped[w, s] = arena.tensors(w, s)
                self.idle_counts.update(
                    {(w, s, k): storage_use_count(t) for k, t in tensors.items()}
                )
        return arena

    def lend(self, batch: LoadedBatch, *, by_reference: bool, local_pool: Any) -> None:
        """Keeps a pooled batch until nothing but the loader refers to it (and, on CUDA, until
        the copy that reads it is done). ``local_pool``: the pool of ``num_workers=0``."""
        slot = batch.slot
        if slot is None:
            return
        if by_reference:  # kept mapped, so the buffer is not mapped again
            self._keep_mapped(slot, batch.tensors)  # (the pin thread's copies are not kept)
        batch.lease(lambda name: self._idle_count(slot, name, local_pool))
        self.leases[slot] = batch

    def _keep_mapped(self, slot: Slot, host: dict[str, torch.Tensor]) -> None:
        """Keeps a pooled batch mapped; a buffer it replaces is unregistered before it goes."""
        old = self.mapped.get(slot)
        if old is not None and old.get("features") is not host.get("features") and self.registry:
            self.gpu.synchronize()  # rare: the worker made a new pool
            self.registry.forget(old.values())
        self.mapped[slot] = host

    def _idle_count(self, slot: Slot, name: str, local_pool: Any) -> int:
        """Use count of a pooled tensor that nothing outside the loader uses: one tensor when
        it came from a worker process; whatever the pool holds itself when the pool lives in
        this process (``local_pool``)."""
        if (*slot, name) in self.idle_counts:  # a slot of the arena, held since the fork
            return self.idle_counts[slot[0], slot[1], name]
        buf = local_pool.buffers.get(slot[1]) if local_pool is not None else None
        return self.lone_count if buf is None else buf.idle_counts.get(name, self.lone_count)

    def give_back(self) -> None:
        """Hands buffers back to their workers once no tensor outside the loader uses them."""
        for slot, batch in list(self.leases.items()):
            if batch.releasable(self.gpu):
                self.flags[slot[0], slot[1]] = 0
                del self.leases[slot]
