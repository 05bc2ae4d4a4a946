"""LoffLoader: shards -> worker-built batches -> device -> tensor augmentation -> your loop.

::

    loader = LoffLoader("s3://bucket/feats/train", batch_size=256, augment="loffta",
                        device="cuda", num_workers=8, seed=0)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for features, labels in loader:   # on the device, augmented
            ...

Data flow per batch: a DataLoader worker reads and decodes samples and writes them into one
preallocated shared-memory batch (:class:`~loffdata.stream.dataset.StreamingDataset` with
``batch_size``), so nothing is pickled per sample; on CUDA the batch is pinned (the
DataLoader's pin thread; page-locking the pooled buffer in place is an opt-in,
:mod:`loffdata.loader.transfer`) and copied to the device on a side stream while the previous
step computes (:class:`~loffdata.loader.batch.LoadedBatch` owns the buffer until its worker
gets it back); int8 caches are dequantised on the device; then the
:class:`~loffdata.augment.Augmenter` runs there (DALI or torch). In the steady state the host
never waits for the GPU (a buffer goes back to its worker after an event query, which does not
block; ``tests/test_loader_standin.py`` counts the waits); it waits when the loader closes
and when a worker replaces a pooled buffer (rare), so that no copy still reads a buffer.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import time
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

import torch
from torch.utils.data import DataLoader

from loffdata.augment.ops.mixing import check_labels
from loffdata.compat import can_count_storage_uses, shutdown_workers
from loffdata.devices import resolve_auto
from loffdata.errors import WorkerDiedError
from loffdata.format import codec
from loffdata.hints import check_device
from loffdata.loader.augmentation import build_augmenter, calibrated
from loffdata.loader.batch import (
    Batch,
    BatchWithExtras,
    HostRegistry,
    LoadedBatch,
    delivered_batch,
)
from loffdata.loader.device import Gpu, as_gpu
from loffdata.loader.leases import BufferLeases, release_flags
from loffdata.loader.loaderconfig import LoaderConfig, resolve_augment
from loffdata.loader.stats import LoaderStats
from loffdata.loader.transfer import device_batches, select_transfer
from loffdata.loader.workers import (
    defer_sigchld,
    gc_frozen,
    start_pass,
    translate_worker_death,
    warm_worker_imports,
)
from loffdata.storage.retry import RetryConfig
from loffdata.stream.batching import SharedArena
from loffdata.stream.dataset import StreamingDataset
from loffdata.stream.mix import Mix, MixedDataset
from loffdata.util import UNSET

__all__ = ["LoffLoader", "LoaderStats", "Batch", "BatchWithExtras"]

_log = logging.getLogger("loffdata.loader")
STATE_VERSION = 1


class LoffLoader:
    """Streams augmented batches of cached features onto a device, for any PyTorch loop.

    Args:
        source: dataset directory or manifest (local path, ``http(s)://``, ``s3://``), a
            brace or glob pattern, a list of shard URLs, or a :class:`~loffdata.stream.mix.Mix`.
        config: every setting (:class:`~loffdata.loader.loaderconfig.LoaderConfig`, embedding
            the dataset's :class:`~loffdata.stream.streamconfig.StreamConfig`); its defaults
            when ``None``.
        rank: rank of this process (default: from ``torch.distributed``).
        world_size: number of ranks (default: from ``torch.distributed``).
        batch_size, augment, device, num_workers, seed, shuffle, shuffle_buffer, dtype, views,
        on_error, retry, storage_options, cache_dir: the everyday settings, overriding the
            field of the same name of ``config`` (or of ``config.stream``); documented and
            defaulted there.
    """

    def __init__(
        self,
        source: str | os.PathLike | list[str] | Mix,
        config: LoaderConfig | None = None,
        *,
        batch_size: int = UNSET,
        augment: Any = UNSET,
        device: str | torch.device | Gpu = UNSET,
        num_workers: int = UNSET,
        seed: int = UNSET,
        shuffle: bool = UNSET,
        shuffle_buffer: int = UNSET,
        dtype: torch.dtype | str = UNSET,
        views: int = UNSET,
        on_error: str = UNSET,
        retry: RetryConfig | None = UNSET,
        storage_options: dict[str, Any] | None = UNSET,
        cache_dir: str | os.PathLike | None = UNSET,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        gpu = device if isinstance(device, Gpu) else None  # a Gpu is no config value
        given = {k: v for k, v in locals().items() if k in _SETTINGS and v is not UNSET}
        if gpu is not None:
            del given["device"]
        self.config = cfg = (config or LoaderConfig()).replace(**given)
        where = resolve_auto(cfg.device)
        check_device(where)
        self.gpu = gpu or as_gpu(where)  # every CUDA call goes through it; None on CPU
        self.device = self.gpu.compute if self.gpu is not None else torch.device(where)
        self.dtype, self.seed = getattr(torch, cfg.dtype), cfg.stream.seed
        self._init_pipeline(source, cfg, rank=rank, world_size=world_size)
        self._init_runtime(cfg)

    def _init_pipeline(
        self, source: Any, cfg: LoaderConfig, *, rank: int | None, world_size: int | None
    ) -> None:
        """The dataset this loader reads, its manifest, and the augmentation step."""
        # on CPU the workers convert, in parallel, while assembling; on CUDA the device does
        stream = replace(cfg.stream, batch_dtype=cfg.dtype if self.gpu is None else None)
        kind = MixedDataset if isinstance(source, Mix) else StreamingDataset
        self.dataset = kind(source, stream, rank=rank, world_size=world_size)
        mixed = isinstance(source, Mix)
        self.manifest = self.dataset.summary_manifest() if mixed else self.dataset.shards.manifest
        num_classes = None if self.manifest is None else self.manifest.num_classes
        self.spec = resolve_augment(cfg.augment, cfg.views, num_classes)
        #: AugmentSpec.target_similarity: magnitudes searched once, here
        self.similarity_search = None
        if self.spec is not None and self.spec.target_similarity is not None:
            in_order = replace(stream, shuffle=False, batch_size=64, batch_dtype="float32")
            calibration_set = kind(source, in_order, rank=rank, world_size=world_size)
            self.spec, self.similarity_search = calibrated(
                self.spec, calibration_set, seed=self.seed, manifest=self.manifest
            )
        self._augmenter = None
        if self.spec is not None:
            self._augmenter = build_augmenter(
                self.spec, cfg.backend, device=self.device, seed=self.seed, manifest=self.manifest
            )

    def _init_runtime(self, cfg: LoaderConfig) -> None:
        """The worker settings and the state of passes, leases and statistics."""
        self.num_workers, self.prefetch_factor = cfg.num_workers, cfg.prefetch_factor
        self.persistent_workers = cfg.persistent_workers
        #: how host batches reach a CUDA device (``LoaderConfig.transfer``); read when the
        #: workers start
        self.transfer = cfg.transfer
        self.return_extras, self.log_every, self.views = cfg.return_extras, cfg.log_every, cfg.views
        self.epoch, self.stats = 0, LoaderStats()
        self._delivered, self._offset, self._epoch_set = 0, 0, False
        self._dl, self._it = None, None
        self._registry = HostRegistry(self.gpu) if self.gpu is not None else None
        self._buffers = BufferLeases(self.gpu, self._registry)
        # registrations are undone when this loader goes, closed or not, before buffers are unmapped
        self._unregister = (
            weakref.finalize(self, HostRegistry.clear, self._registry) if self.gpu else None
        )
        spec = self.dataset.shards.features
        self._sample_bytes = math.prod(spec.shape) * codec.DTYPES[spec.dtype].itemsize

    # -- public ---------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch (order and augmentation both depend on it)."""
        if int(epoch) != self.epoch:
            self._offset = 0
        self.epoch, self._epoch_set = int(epoch), True
        self.dataset.set_epoch(self.epoch)

    def __len__(self) -> int:
        """Batches per epoch on this rank (equal on every rank; independent of workers)."""
        return len(self.dataset)

    def __iter__(self) -> Iterator[Batch | BatchWithExtras]:
        self._advance_epoch_if_needed()
        self.stats, self._delivered = LoaderStats(), 0
        it, completed = self._start(), False
        try:
            for batch in self._batches(it):
                self._delivered += 1
                self._log()
                completed = self._offset + self._delivered >= len(self)  # Lightning stops here
                yield batch
                del batch
                self._buffers.give_back()
            completed = True
        finally:
            if not (completed and self._persistent):  # break, exception, or workers per epoch
                self.close()

    @property
    def _persistent(self) -> bool:
        return self.persistent_workers and self.num_workers > 0

    def _start(self) -> Iterator[Any]:
        """The DataLoader iterator of this pass: new workers, or the persistent ones told
        the epoch and resume state through the shared control block."""
        if self._dl is None:
            self._start_transfer()
            # buffers are reused only where torch can tell when the consumer is done with them
            flags = self._release_flags() if can_count_storage_uses() else None
            self.dataset.release_flags = self._buffers.flags = flags
            # the DataLoader's pin thread copies each batch, so references need unpinned batches
            self.dataset.send_by_reference = self._transfer != "pin-thread"
            self._buffers.clear()
            self.dataset.batch_arena = self._make_arena()
            if self._persistent:
                self.dataset.control = torch.zeros(1 << 20, dtype=torch.uint8).share_memory_()
            if self.num_workers > 0:
                warm_worker_imports()
            self._dl = self._dataloader()
        if self._persistent:
            self.dataset.publish_control()
        try:
            with (
                gc_frozen()
            ):  # forked workers then leave the parent's objects alone (no copy-on-write)
                self._it = start_pass(self._dl)
        except WorkerDiedError:  # a persistent worker died while idle between passes
            self._it = getattr(self._dl, "_iterator", None)
            self.close()
            raise
        defer_sigchld()  # after torch installed its handler: a dead worker is reported by next()
        return self._it

    def _make_arena(self) -> SharedArena | None:
        """The workers' pooled buffers, preallocated here before the fork (so that every
        pooled batch comes by reference, from the first on), when workers are forked and
        batches are sent by reference; this loader holds every slot from now on."""
        forked = torch.multiprocessing.get_start_method() == "fork"
        pooled = self._buffers.flags is not None and self.dataset.send_by_reference
        if not (forked and self.num_workers > 0 and pooled):
            return None
        return self._buffers.make_arena(self.dataset)

    def _start_transfer(self) -> None:
        """Picks the host-to-device path and makes the loader's GPU the current one (the pin
        thread and DALI use the current device; without this every DDP rank opens GPU 0)."""
        self._transfer = select_transfer(self.gpu, self.transfer)
        if self.gpu is not None:
            self.gpu.make_current()

    def close(self) -> None:
        """Stops the worker processes now (they are started again by the next pass)."""
        if self._it is not None:
            shutdown_workers(self._it)  # stops the workers now
        self._it = self._dl = None
        self.dataset.control = None
        if self._registry is not None:
            self._registry.clear()  # waits for the device: no copy may still read a buffer
        self._buffers.clear()
        self.dataset.batch_arena = None  # unmapped once the workers are gone and nothing uses it

    def state_dict(self) -> dict[str, Any]:
        """Position mid-epoch; restoring it makes the next iteration continue exactly there.

        Schema: ``{"version": 1, "epoch": int, "position": batches of this epoch already
        given to the consumer, "dataset": StreamingDataset.state_dict(...)}``. A loader
        resumed with another batch size counts ``position`` in its own batches.
        """
        workers = max(1, self.num_workers)
        ds = self.dataset.state_dict(delivered=self._delivered, num_workers=workers)
        position = self._offset + self._delivered
        return {"version": STATE_VERSION, "epoch": self.epoch, "position": position, "dataset": ds}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`state_dict` (also one saved by another process)."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported loader state version {state.get('version')!r}")
        self.dataset.load_state_dict(dict(state["dataset"]))
        self.epoch, self._epoch_set = int(state["epoch"]), True
        # the batches already done, counted in this loader's batch size (the state may count
        # another one): the epoch's batches less those its rest makes
        rest = len(self.dataset.worker_plan(0, 1).batch_sizes)
        self._offset, self._delivered = len(self) - rest, 0

    # -- pipeline steps -------------------------------------------------------------------

    def _advance_epoch_if_needed(self) -> None:
        """Without set_epoch between two full passes, the second pass takes the next epoch."""
        finished = self._offset + self._delivered >= len(self) > 0
        if finished and not self._epoch_set:
            self.epoch += 1
            self.dataset.set_epoch(self.epoch)
        if finished or not self._epoch_set:
            self._offset = 0
        self._epoch_set = False

    def _release_flags(self) -> torch.Tensor:
        """Shared flags through which batch buffers are handed back to the workers."""
        return release_flags(self.dataset, self.num_workers, self.prefetch_factor)

    def _lend(self, batch: LoadedBatch) -> None:
        """Keeps a pooled batch on lease until the consumer and the copy are done with it."""
        local_pool = self.dataset._pool if self.num_workers == 0 else None
        self._buffers.lend(
            batch, by_reference=self.dataset.send_by_reference, local_pool=local_pool
        )

    def _dataloader(self) -> DataLoader:
        workers = self.num_workers
        return DataLoader(
            self.dataset,
            batch_size=None,
            num_workers=workers,
            pin_memory=self._transfer == "pin-thread" and self.gpu.pin_thread,
            prefetch_factor=self.prefetch_factor if workers > 0 else None,
            persistent_workers=self._persistent,
            collate_fn=_whole_batch,
        )

    def _batches(self, it: Iterator[Any]) -> Iterator[Batch | BatchWithExtras]:
        """Delivered batches; ``stats.wait_s`` counts all the time the consumer spends in
        here: waiting for workers, the copy, dequantisation and augmentation."""
        source = self._device_batches(self._received(it))
        while True:
            t0 = time.perf_counter()
            got = next(source, None)
            if got is None:
                return
            loaded, payload = got
            batch = self._finish(loaded, payload)
            self._lend(loaded)
            del got, loaded, payload
            self.stats.wait_s += time.perf_counter() - t0
            yield batch

    def _received(self, it: Iterator[Any]) -> Iterator[LoadedBatch]:
        """Host batches from the workers; a dead worker becomes :class:`WorkerDiedError`."""
        while True:
            try:
                host = next(it)
            except StopIteration:
                return
            except Exception as err:
                died = translate_worker_death(it, err)
                if died is err:
                    raise
                raise died from err
            # a worker's batch, or its reference to a pooled buffer this loader keeps mapped
            yield LoadedBatch.from_worker(host, self._buffers.mapped)

    def _device_batches(self, hosts: Iterator[LoadedBatch]) -> Iterator[tuple[LoadedBatch, dict]]:
        """Copies batch k+1 to the device on a side stream while batch k is being used."""
        if self.gpu is None:
            yield from ((b, b.ready(None)) for b in hosts)
            return
        registry = self._registry if self._transfer == "register" else None
        yield from device_batches(hosts, self.gpu, registry=registry)

    def _finish(self, loaded: LoadedBatch, b: dict[str, torch.Tensor]) -> Batch | BatchWithExtras:
        """The delivered batch, from the device payload ``b`` (labels checked on the host)."""
        if self.spec is not None and self.spec.mixing:
            check_labels(loaded.payload["label"], self.spec.num_classes, loaded.keys)
        x = b["features"]
        if x.dtype == torch.int8:
            x = x.to(torch.float32) * b["scale"].to(torch.float32)[:, :, None, None]
        x = x.to(self.dtype)
        y = b["label"]
        self.stats.batches += 1
        self.stats.samples += int(x.shape[0])
        self.stats.bytes += int(x.shape[0]) * self._sample_bytes
        if self._augmenter is not None:
            x, y = self._augmenter(x, y, indices=loaded.indices.numpy(), epoch=self.epoch)
            x = x.to(self.dtype)
        extras = self.dataset.shards.extras if self.return_extras else None
        return delivered_batch(loaded, x, y, b, views=self.views, extras=extras)

    def _log(self) -> None:
        if self.log_every and self.stats.batches % self.log_every == 0:
            _log.info("loffdata epoch %d: %s", self.epoch, self.stats)


def _whole_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """The DataLoader's collate step: batches come whole from the dataset (the default,
    ``default_convert``, would walk every key of every batch)."""
    return batch


#: The keyword settings of LoffLoader, each overriding the LoaderConfig field of its name.
_SETTINGS = frozenset(
    p.name
    for p in inspect.signature(LoffLoader.__init__).parameters.values()
    if p.kind is p.KEYWORD_ONLY and p.default is UNSET
)
