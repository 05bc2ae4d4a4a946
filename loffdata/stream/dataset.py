"""``StreamingDataset``: an IterableDataset that streams samples out of shards anywhere.

The order, the split across ranks and workers, padding and resumption are computed by
:mod:`loffdata.stream.plan` from (seed, epoch) and the shards' sample counts; this module reads
the samples the plan names and hands them out one by one or as whole batches assembled in
shared memory. See ``docs/streaming.md``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from loffdata.errors import LoffError
from loffdata.storage.prefetch.by_shard import PrefetchConfig
from loffdata.storage.retry import RetryConfig
from loffdata.stream import workerstate
from loffdata.stream.batching import (
    BufferPool,
    SharedArena,
    first_window,
    reads_randomly,
    window_batches,
)
from loffdata.stream.indexed import IndexedDataset
from loffdata.stream.order import EpochOrder
from loffdata.stream.plan import (
    Layout,
    PlanState,
    RankPlan,
    WorkerPlan,
    epoch_order,
    rank_length,
    resume_sequence_plan,
    sequence_plan,
    window_size,
)
from loffdata.stream.policy import ErrorPolicy
from loffdata.stream.reader import ReadContext, SampleReader, substituted
from loffdata.stream.sources import ShardSet, load_manifest, resolve_source
from loffdata.stream.streamconfig import StreamConfig
from loffdata.util import UNSET, distributed_rank_world

__all__ = ["StreamingDataset", "ShardSet", "resolve_source", "load_manifest", "STATE_VERSION"]

STATE_VERSION = 2  # 2: a plan state holds its start in the global order (was: a parent state)

# ------------------------------------------------------------------------------ dataset


class StreamingDataset(IterableDataset):
    """Streams samples or ready-made batches out of tar shards (local, HTTP, S3, any fsspec URL).

    Args:
        source: a directory or manifest URL (``path``, ``http(s)://``, ``s3://``), a brace
            pattern of shard URLs, or a list of shard URLs (see :func:`resolve_source`).
        config: what is read and how (:class:`~loffdata.stream.streamconfig.StreamConfig`; its
            defaults when ``None``).
        rank: this process's rank (default: from ``torch.distributed`` if initialised, else 0).
        world_size: number of ranks (same default, else 1).
        seed, shuffle, shuffle_buffer, batch_size, batch_dtype, partial, drop_last,
        on_error, storage_options, cache_dir, cache_limit_bytes, retry, prefetch: override the field
            of the same name of ``config`` (documented there, defaults declared there).
    """

    def __init__(
        self,
        source: str | os.PathLike | Sequence[str],
        config: StreamConfig | None = None,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        seed: int = UNSET,
        shuffle: bool = UNSET,
        shuffle_buffer: int = UNSET,
        batch_size: int | None = UNSET,
        batch_dtype: str | None = UNSET,
        partial: str = UNSET,
        drop_last: bool = UNSET,
        on_error: str = UNSET,
        storage_options: dict[str, Any] | None = UNSET,
        cache_dir: str | os.PathLike | None = UNSET,
        cache_limit_bytes: int | None = UNSET,
        retry: RetryConfig | None = UNSET,
        prefetch: PrefetchConfig | None = UNSET,
    ):
        super().__init__()
        self.config = config = StreamConfig.with_settings(
            config,
            seed=seed,
            shuffle=shuffle,
            shuffle_buffer=shuffle_buffer,
            batch_size=batch_size,
            batch_dtype=batch_dtype,
            partial=partial,
            drop_last=drop_last,
            on_error=on_error,
            retry=retry,
            prefetch=prefetch,
            storage_options=storage_options,
            cache_dir=cache_dir,
            cache_limit_bytes=cache_limit_bytes,
        )
        self._adopt(config, source, rank, world_size)

    def _adopt(self, config: StreamConfig, source: Any, rank: int | None, world: int | None):
        """The settings of ``config``, the shards of ``source`` and a fresh epoch state."""
        self.batch_size, self.on_error = config.batch_size, config.on_error
        self.batch_dtype, self.retry, self.cache = config.batch_dtype, config.retry, config.cache
        self.storage_options = dict(config.storage_options)
        self.prefetch = config.prefetch  # read when an iteration starts (benchmarks change it)
        self.shards = self._resolve(source)
        self._rank, self._world, self._dist = rank, world, distributed_rank_world()
        self.epoch, self._yielded, self._num_workers = 0, 0, 1
        self._policy = ErrorPolicy(config.on_error)
        self._resume: PlanState | None = None
        self._pool: BufferPool | None = None
        #: Set by a consumer that releases batches (see
        #: :class:`~loffdata.stream.batching.BufferPool`): int32 ``[workers, slots]`` flags
        #: in shared memory; ``None`` makes every batch fresh.
        self.release_flags: torch.Tensor | None = None
        #: Set by a consumer that also keeps every pooled buffer it received: buffers it
        #: already has are then sent as ``{"slot", "key", "ref": True}`` references.
        self.send_by_reference = False
        #: Set with ``send_by_reference`` by a consumer that forks its workers: the pooled
        #: buffers, preallocated in a :class:`~loffdata.stream.batching.SharedArena` that the
        #: workers inherit (every pooled batch is then sent by reference).
        self.batch_arena: SharedArena | None = None
        #: Set by a consumer with persistent DataLoader workers: a uint8 shared-memory block
        #: where it publishes the epoch and resume state before each iteration (JSON), since
        #: persistent workers keep their copy of the dataset from the first epoch.
        self.control: torch.Tensor | None = None

    def _resolve(self, source: Any) -> ShardSet:
        """The shard set of ``source`` (a hook: :class:`~loffdata.stream.mix.MixedDataset`)."""
        return resolve_source(source, self.storage_options, self.retry)

    def _reader(self, *, reuse_buffers: bool) -> SampleReader:
        """This process's sample reader (a hook: a mix reads each source with its own options)."""
        return SampleReader(self._read_context(), self._policy, reuse_buffers=reuse_buffers)

    def __getitem__(self, i: int) -> dict[str, Any]:
        """Sample ``i`` in manifest order, as stored (map-style access: :meth:`indexed`)."""
        return self.indexed().item(i)

    def indexed(self) -> IndexedDataset:
        """A map-style view of the same shards (a ``torch.utils.data.Dataset`` whose items are
        writable tensors, int8 dequantised: a plain ``DataLoader`` collates them)."""
        if getattr(self, "_indexed", None) is None:
            self._indexed = IndexedDataset(
                shards=self.shards, storage_options=self.storage_options, retry=self.retry
            )
        return self._indexed

    # -- layout -------------------------------------------------------------------------

    def rank_world(self) -> tuple[int, int]:
        """``(rank, world_size)``: explicit arguments, else ``torch.distributed``, else (0, 1).

        The distributed values are remembered when first seen (at construction, ``len()``,
        ``state_dict()`` or iteration in the main process), since DataLoader worker
        processes do not have the process group: create the dataset after
        ``init_process_group`` or pass ``rank``/``world_size``.
        """
        live = distributed_rank_world()
        if live is not None:
            self._dist = live
        found = self._dist or (0, 1)
        rank = self._rank if self._rank is not None else found[0]
        world = self._world if self._world is not None else found[1]
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is outside world_size {world}")
        return rank, world

    def _layout(self, num_workers: int) -> Layout:
        return Layout(
            world_size=self.rank_world()[1],
            num_workers=max(1, num_workers),
            batch_size=self.batch_size or 1,
        )

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch; a loaded state for another epoch is forgotten."""
        self.epoch = int(epoch)
        if self._resume is not None and self._resume.epoch != self.epoch:
            self._resume = None

    def __len__(self) -> int:
        """Items (samples, or batches with ``batch_size``) each rank yields per epoch."""
        length = rank_length(self.shards.num_samples, self.rank_world()[1], self.config.partial)
        b = self.batch_size or 1
        return length // b if self.config.drop_last else -(-length // b)

    # -- plans ----------------------------------------------------------------------------

    def epoch_order(self, epoch: int) -> EpochOrder | np.ndarray:
        """The epoch's global order, lazy (computed a window at a time; a hook for mixes)."""
        return epoch_order(self.shards.counts, self.config, epoch)

    def global_order(self, epoch: int) -> np.ndarray:
        """The epoch's global order of sample indices, before any split (pure; reads nothing)."""
        return np.asarray(self.epoch_order(epoch))

    def _plan(self, num_workers: int) -> tuple[RankPlan, PlanState]:
        """``(plan, base)``: this rank's plan and the state its progress adds to."""
        rank, layout = self.rank_world()[0], self._layout(num_workers)
        if self._resume is None:
            plan = sequence_plan(self.epoch_order(self.epoch), self.config, layout, rank=rank)
            return plan, PlanState(epoch=self.epoch, layout=layout)
        order = self.epoch_order(self._resume.epoch)
        return resume_sequence_plan(order, self.config, self._resume, layout, rank=rank)

    def _base(self, num_workers: int) -> PlanState:
        """The state that progress of the current iteration adds to (no plan computed)."""
        layout = self._layout(num_workers)
        r = self._resume
        if r is None:
            return PlanState(epoch=self.epoch, layout=layout)
        return PlanState(epoch=r.epoch, layout=layout, start=r.position)

    def worker_plan(self, worker: int = 0, num_workers: int = 1) -> WorkerPlan:
        """What worker ``worker`` of ``num_workers`` yields this epoch (pure; reads nothing):
        the rank's batches ``worker, worker + num_workers, ...``."""
        return self._plan(num_workers)[0].worker(worker, max(1, num_workers))

    # -- iteration ------------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self._iterated = True  # at iter() time: a state may be asked for before the first item
        return self._iterate()

    def _iterate(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if info is not None and self.control is not None:
            self._read_control()
        self._num_workers, self._yielded = num_workers, 0
        wplan = self.worker_plan(worker, num_workers)
        skip = getattr(self, "_worker_resume", None)  # a worker state (StatefulDataLoader)
        self._worker_resume = None
        if skip is not None:
            wplan, self._yielded = workerstate.skip_yielded(wplan, skip.yielded), skip.yielded
        reader = self._reader(reuse_buffers=bool(self.batch_size))
        window = window_size(self.config.shuffle_buffer, self.batch_size or 1)
        if self.batch_size and reads_randomly(reader):
            reader.plan_reads(
                wplan.indices,
                window,
                batch=self.batch_size,
                first=first_window(wplan.batch_sizes, window),
            )
        else:
            reader.plan_reads(wplan.indices, window)
        try:
            if self.batch_size:
                window = window_size(self.config.shuffle_buffer, self.batch_size)
                items = window_batches(
                    reader, wplan, window, self._buffer_pool(worker, info is not None)
                )
            else:
                items = self._singles(reader, wplan)
            for item in items:
                self._yielded += 1  # counted when handed out: a consumer may stop right after
                yield item
        finally:
            reader.close()

    def _buffer_pool(self, worker: int, shared: bool) -> BufferPool:
        """This process's pool; kept across iterations (persistent workers reuse buffers)."""
        p = self._pool
        want = (self.batch_dtype, shared, self.send_by_reference)
        stale = (
            p is None
            or p.source_flags is not self.release_flags
            or p.arena_source is not self.batch_arena
        )
        if stale or (p.dtype, p.shared, p.by_reference) != want:
            p = self._pool = BufferPool(
                self.shards,
                batch_size=self.batch_size,
                shared=shared,
                flags=self.release_flags,
                worker=worker,
                dtype=self.batch_dtype,
                by_reference=self.send_by_reference,
                arena=self.batch_arena,
            )
        return p

    def publish_control(self) -> None:
        """Writes the epoch and resume state to :attr:`control` for persistent workers."""
        state = {
            "epoch": self.epoch,
            "resume": None if self._resume is None else self._resume.to_dict(),
        }
        data = json.dumps(state).encode()
        if len(data) + 8 > self.control.numel():
            raise LoffError(f"resume state of {len(data)} bytes does not fit the control block")
        self.control[:8] = torch.tensor(list(len(data).to_bytes(8, "little")), dtype=torch.uint8)
        self.control[8 : 8 + len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)

    def _read_control(self) -> None:
        n = int.from_bytes(bytes(self.control[:8].tolist()), "little")
        state = json.loads(bytes(self.control[8 : 8 + n].tolist()))
        self.epoch = state["epoch"]
        self._resume = None if state["resume"] is None else PlanState.from_dict(state["resume"])

    def _read_context(self) -> ReadContext:
        """What the reader of this process needs to know (it never sees the dataset)."""
        return ReadContext(
            shards=self.shards,
            storage_options=self.storage_options,
            retry=self.retry,
            cache=self.cache,
            batched=bool(self.batch_size),
            prefetch=self.prefetch,
        )

    @property
    def skipped(self) -> dict[str, int]:
        """``{"samples": n, "errors": k}``: samples skipped (``on_error="skip"``) and errors
        met by iterations in this process (DataLoader workers count their own)."""
        return self._policy.skipped

    def _singles(self, reader: SampleReader, wplan: WorkerPlan) -> Iterator[dict[str, Any]]:
        for gid, s in substituted(reader, wplan.indices, self.config.shuffle_buffer):
            yield {"key": s.key, "index": gid, "features": s.features, "label": s.label, **s.extras}

    # -- state ----------------------------------------------------------------------------

    def state_dict(
        self, *, delivered: int | None = None, num_workers: int | None = None
    ) -> dict[str, Any]:
        """The resumable position in the epoch.

        Args:
            delivered: items (batches, or samples without ``batch_size``) the consumer has
                received from the current iteration, counted in DataLoader delivery order.
                ``None``: what this object yielded itself (iteration in this process); inside
                a DataLoader worker, that worker's own state (for torchdata's
                ``StatefulDataLoader``, see :mod:`loffdata.stream.workerstate`); an error
                for an object not iterated in this process.
            num_workers: DataLoader workers of the current iteration (``None``: the last
                iteration in this process, 1 if none; pass 1 for ``num_workers=0``).
        """
        info = get_worker_info()
        if delivered is None and info is not None:  # a worker of torchdata's StatefulDataLoader
            base = self._base(info.num_workers)
            return workerstate.worker_state(base, self._yielded, self._fingerprint(), STATE_VERSION)
        workers = self._num_workers if num_workers is None else max(1, num_workers)
        base = self._base(workers)
        if delivered is None:
            workerstate.check_main_process_state(getattr(self, "_iterated", False))
        done = self._yielded if delivered is None else int(delivered)
        plan = PlanState(
            epoch=base.epoch,
            layout=base.layout,
            delivered=base.delivered + done,
            start=base.start,
        )
        return {"version": STATE_VERSION, **self._fingerprint(), "plan": plan.to_dict()}

    def _fingerprint(self) -> dict[str, Any]:
        c = self.config
        return {
            "seed": c.seed,
            "shuffle": c.shuffle,
            "shuffle_buffer": c.shuffle_buffer,
            "partial": c.partial,
            "drop_last": c.drop_last,
            "num_samples": self.shards.num_samples,
            "num_shards": len(self.shards.counts),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resumes from :meth:`state_dict`'s output: the next iteration yields the rest of its
        epoch.

        Raises:
            ValueError: if the state belongs to another dataset or order configuration.
        """
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported state version {state.get('version')!r}")
        mine = self._fingerprint()
        diff = {k: (state.get(k), v) for k, v in mine.items() if state.get(k) != v}
        if diff:
            raise ValueError(f"state does not match this dataset (state, dataset): {diff}")
        if "worker" in state:  # a worker's own state (StatefulDataLoader): stream.workerstate
            self._resume, self._worker_resume = workerstate.load_worker_state(state)
        else:
            self._resume = PlanState.from_dict(state["plan"])
        self.epoch, self._yielded = self._resume.epoch, 0
