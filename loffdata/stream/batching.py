"""Batch assembly inside the reading process: samples go straight into preallocated rows.

A worker reads one shuffle window at a time; every sample is copied once, from its decoded
payload view into its row of a batch tensor that lives in shared memory, so only whole
batches cross the process boundary (as shared-memory handles), never single samples.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from loffdata.format import codec
from loffdata.stream.batchbuffer import BatchBuffer
from loffdata.stream.plan import WorkerPlan
from loffdata.stream.policy import ErrorPolicy
from loffdata.stream.reader import SampleReader
from loffdata.stream.sources import ShardSet

__all__ = [
    "BatchBuffer",
    "BufferPool",
    "SharedArena",
    "first_window",
    "window_batches",
    "pool_slots",
    "reads_randomly",
]


class _RowFiller:
    """Skip mode for batches: the failed rows of a window get stand-ins from the policy's
    :class:`~loffdata.stream.policy.StandIns` (a copy of the previous good row or, before
    the first good row of the worker, of the next good one: batches wait for it)."""

    def __init__(self, shards: ShardSet, dtype: str | None, policy: ErrorPolicy):
        # strict mode never has rows to fill: no private copy
        self.private = (
            BatchBuffer(shards, 1, shared=False, dtype=dtype) if policy.skipping else None
        )
        self.stand_ins = policy.stand_ins(self._copy, self._keep)
        self.pending: list[BatchBuffer] = []

    @staticmethod
    def _copy(dst: tuple[BatchBuffer, int], src: tuple[BatchBuffer, int]) -> None:
        dst[0].copy_row(dst[1], *src)

    def _keep(self, slot: tuple[BatchBuffer, int]) -> tuple[BatchBuffer, int]:
        """A private copy of a good row: the consumer may change a batch in place."""
        self.private.copy_row(0, *slot)
        return self.private, 0

    def complete(
        self, rows: list[tuple[BatchBuffer, int]], got: np.ndarray, bufs: list[BatchBuffer]
    ) -> list[BatchBuffer]:
        """Fills the failed rows of a window; returns the batches that are ready, in order."""
        self.pending += bufs
        if not self.stand_ins.fill(rows, got.tolist()):
            return []
        ready, self.pending = self.pending, []
        return ready

    def finish(self) -> None:
        self.stand_ins.finish()


def _batch_groups(sizes: np.ndarray, window: int) -> Iterator[np.ndarray]:
    """Consecutive runs of whole batches holding at most ``window`` samples (at least one batch)."""
    lo, total = 0, 0
    for hi, size in enumerate(sizes.tolist()):
        if total and total + size > window:
            yield sizes[lo:hi]
            lo, total = hi, 0
        total += size
    if lo < len(sizes):
        yield sizes[lo:]


def first_window(sizes: np.ndarray, window: int) -> int:
    """Samples in the batches of the first read group of ``window`` (at least one batch)."""
    return int(next(_batch_groups(sizes, window), np.zeros(0, dtype=np.int64)).sum())


def _read_groups(
    reader: SampleReader, sizes: np.ndarray, window: int
) -> Iterator[tuple[np.ndarray, bool]]:
    """``(batch sizes, by random access)`` of each group of batches read together."""
    if not reads_randomly(reader):
        yield from ((g, False) for g in _batch_groups(sizes, window))
        return
    yield from ((g, True) for g in _batch_groups(sizes, 1))  # local or remote by sample


def _fill_window(
    reader: SampleReader,
    ids: np.ndarray,
    rows: list[tuple[BatchBuffer, int]],
    *,
    direct: bool,
    staging: Staging | None = None,
    random: bool = False,
) -> np.ndarray:
    """Reads the samples of ``ids``, copying each into its row(s) at once.

    ``direct``: feature data is read straight into the rows; else, with ``staging``, into
    staging rows it is then converted from (random access needs somewhere to read to).
    """
    where: dict[int, list[int]] = {}
    for p, gid in enumerate(ids.tolist()):
        where.setdefault(gid, []).append(p)
    got = np.zeros(len(ids), dtype=bool)
    if direct:
        dest = {gid: rows[ps[0]][0].feature_bytes(rows[ps[0]][1]) for gid, ps in where.items()}
    else:
        dest = staging.rows(list(where)) if staging is not None else None
    # the sorted keys, not np.unique: its first call imports numpy.ma (0.1-0.2 s per worker)
    unique = np.fromiter(sorted(where), dtype=np.int64, count=len(where))
    for gid, sample in reader.each(unique, dest, random=random):
        for p in where[gid]:
            buf, i = rows[p]
            buf.put(i, gid, sample)
            got[p] = True
    return got


class Staging:
    """Reused rows in the storage dtype that converted batches are read into first."""

    def __init__(self, row_bytes: int):
        self.row_bytes, self.buf = row_bytes, bytearray(0)

    def rows(self, gids: list[int]) -> dict[int, memoryview]:
        need = len(gids) * self.row_bytes
        if len(self.buf) < need:
            self.buf = bytearray(need)
        view, n = memoryview(self.buf), self.row_bytes
        return {gid: view[k * n : (k + 1) * n] for k, gid in enumerate(gids)}


class BufferPool:
    """Full-size batch buffers, reused once the consumer has released them.

    Allocating a fresh shared-memory batch costs a zero-filled page per 4 KiB, in the worker
    that fills it and again in the process that maps it; a reused buffer costs neither (the
    consumer keeps its mapping, and torch's storage cache hands the same one back). The
    consumer releases a buffer by zeroing its flag in ``flags`` (int32 ``[workers, slots]``,
    in shared memory); :class:`~loffdata.loader.LoffLoader` does so once nothing refers to
    the batch any more. When no buffer is free a fresh one is made, so a consumer that keeps
    batches never blocks the worker. Without ``flags`` every batch is fresh.
    """

    def __init__(
        self,
        shards: ShardSet,
        *,
        batch_size: int,
        shared: bool,
        flags: torch.Tensor | None,
        worker: int,
        dtype: str | None = None,
        by_reference: bool = False,
        arena: SharedArena | None = None,
    ):
        self.shards, self.batch_size, self.shared, self.dtype = shards, batch_size, shared, dtype
        self.source_flags = flags
        self.flags = flags[worker].numpy() if flags is not None else None  # numpy: fast to index
        self.worker, self.held, self.buffers = worker, set(), {}
        self.by_reference = by_reference and flags is not None
        self.sent: set[int] = set()  # slots whose tensors the consumer has and keeps
        #: slots preallocated by the consumer before the fork: it holds them all already
        self.arena_source, self.arena = arena, arena if self.by_reference and shared else None

    def get(self, size: int) -> BatchBuffer:
        slot = self._free_slot() if self.flags is not None and size == self.batch_size else None
        if slot is None:
            return BatchBuffer(self.shards, size, self.shared, self.dtype)
        buf = self.buffers.get(slot)
        if buf is None:
            given = self.arena.tensors(self.worker, slot) if self.arena is not None else None
            buf = self.buffers[slot] = BatchBuffer(
                self.shards, size, self.shared, self.dtype, given=given
            )
            buf.slot = (self.worker, slot)
            if given is not None:
                self.sent.add(slot)  # the consumer mapped the arena before the fork
        self.held.add(slot)
        return buf

    def _free_slot(self) -> int | None:
        for s in range(len(self.flags)):
            if s not in self.held and not self.flags[s]:
                return s
        return None

    def hand_out(self, buf: BatchBuffer) -> dict[str, Any]:
        """The batch as handed to the consumer; a pooled buffer is then the consumer's until
        it releases it.

        With ``by_reference`` the consumer keeps every pooled buffer it has received (as
        :class:`~loffdata.loader.LoffLoader` does), so a buffer it already has is sent as a
        reference, ``{"slot", "key", "ref": True}``: no file descriptor is passed and nothing
        is mapped again. Slots of a :class:`SharedArena` are sent by reference from the
        first batch on.
        """
        if buf.slot is None:
            return buf.result()
        slot = buf.slot[1]
        self.flags[slot] = 1
        self.held.discard(slot)
        if self.by_reference and slot in self.sent:
            return {"slot": buf.slot, "key": list(buf.keys), "ref": True}
        self.sent.add(slot)
        return buf.result()


class SharedArena:
    """Every pooled batch buffer of every worker, in one anonymous shared mapping made by
    the consumer before it forks the workers.

    The workers inherit the mapping, so a pooled batch never crosses the process boundary
    as shared-memory handles: no segment is created per buffer, no file descriptor is
    passed, and the consumer maps nothing when a batch arrives; every pooled batch comes
    as a reference ``(worker, slot)`` from the first one on. Pages are only backed once
    written, so slots that are never used cost nothing. Each tensor has a storage of its
    own (the consumer watches storage use counts to release a batch) and starts on a page
    boundary (so that each can be page-locked for CUDA on its own).
    """

    def __init__(
        self, shards: ShardSet, *, batch_size: int, dtype: str | None, workers: int, slots: int
    ):
        self.workers, self.slots = workers, slots
        probe = BatchBuffer(
            shards, 1, shared=False, dtype=dtype
        )  # one row: the names, shapes and dtypes
        self.layout: list[tuple[str, tuple[int, ...], torch.dtype, int, int]] = []
        offset = 0
        for name, t in probe.tensors.items():
            shape = (batch_size, *t.shape[1:])
            nbytes = int(np.prod(shape, dtype=np.int64)) * t.element_size()
            self.layout.append((name, shape, t.dtype, offset, nbytes))
            offset += -(-max(nbytes, 1) // mmap.PAGESIZE) * mmap.PAGESIZE
        self.stride = offset
        self.map = mmap.mmap(-1, max(1, workers * slots * offset), flags=mmap.MAP_SHARED)

    def tensors(self, worker: int, slot: int) -> dict[str, torch.Tensor]:
        """The tensors of one slot, each on a storage of its own over the shared mapping."""
        if not (0 <= worker < self.workers and 0 <= slot < self.slots):
            raise IndexError(
                f"no slot ({worker}, {slot}) in an arena of {self.workers} x {self.slots}"
            )
        base, out = (worker * self.slots + slot) * self.stride, {}
        for name, shape, dt, offset, nbytes in self.layout:
            if nbytes == 0:
                out[name] = torch.empty(shape, dtype=dt)
                continue
            storage = torch.frombuffer(
                self.map, dtype=torch.uint8, count=nbytes, offset=base + offset
            ).untyped_storage()
            out[name] = torch.empty(0, dtype=dt).set_(storage, 0, shape)
        return out


def window_batches(
    reader: SampleReader, wplan: WorkerPlan, window: int, pool: BufferPool
) -> Iterator[dict[str, Any]]:
    """Batches of a worker plan, one window at a time: samples go straight into their rows,
    so a window holds batch tensors, not payload bytes."""
    filler, pos = _RowFiller(reader.shards, pool.dtype, reader.policy), 0
    # data is read straight into rows unless converted, or int8 (the scale follows the data)
    spec = reader.shards.features
    direct = pool.dtype in (None, spec.dtype) and spec.dtype != "int8"
    staging = None
    if reads_randomly(reader) and not direct:  # random access needs somewhere to read to
        staging = Staging(int(np.prod(spec.shape)) * codec.DTYPES[spec.dtype].itemsize)
    for sizes, random in _read_groups(reader, wplan.batch_sizes, window):
        bufs = [pool.get(int(k)) for k in sizes.tolist()]
        rows = [(b, i) for b in bufs for i in range(b.size)]
        got = _fill_window(
            reader,
            wplan.indices[pos : pos + len(rows)],
            rows,
            direct=direct,
            staging=staging if random else None,
            random=random,
        )
        pos += len(rows)
        for buf in filler.complete(rows, got, bufs):
            yield pool.hand_out(buf)
    filler.finish()


def reads_randomly(reader: SampleReader) -> bool:
    """Whether batches are filled by random access, one batch at a time (indexed shards, not
    int8: an int8 batch's scale follows its data, so it is read through the window)."""
    return bool(reader.random_access) and reader.shards.features.dtype != "int8"


def pool_slots(window: int, batch_size: int, prefetch: int) -> int:
    """Pooled buffers per worker: one window of batches, those queued, a few in use."""
    return -(-window // batch_size) + prefetch + 4
