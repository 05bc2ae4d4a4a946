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
gets it back); int8 caches are
dequantised on the device; then the :class:`~loffdata.augment.Augmenter` runs there (DALI or
torch). Nothing in that path makes the host wait for the GPU.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import time
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch.utils.data import DataLoader

from loffdata.compat import can_count_storage_uses, shutdown_workers
from loffdata.compat import storage_use_count as _use_count
from loffdata.errors import WorkerDiedError
from loffdata.format import codec
from loffdata.hints import check_device
from loffdata.loader.batch import Batch, BatchWithExtras, HostRegistry, LoadedBatch
from loffdata.loader.config import LoaderConfig, resolve_augment
from loffdata.loader.device import Gpu, as_gpu
from loffdata.loader.transfer import device_batches, select_transfer
from loffdata.loader.workers import (
    defer_sigchld,
    gc_frozen,
    start_pass,
    translate_worker_death,
    warm_worker_imports,
)
from loffdata.storage.remote import RetryConfig
from loffdata.stream.batching import SharedArena, pool_slots
from loffdata.stream.dataset import StreamingDataset
from loffdata.stream.mix import Mix, MixedDataset
from loffdata.stream.plan import window_size
from loffdata.util import UNSET

__all__ = ["LoffLoader", "LoaderStats", "Batch", "BatchWithExtras"]

_log = logging.getLogger("loffdata.loader")
STATE_VERSION = 1


@dataclass
class LoaderStats:
    """Throughput of the current iteration, and how long the consumer waited for data.

    ``wait_fraction`` near 0 means the loader keeps up; near 1 means it is the bottleneck.
    """

    batches: int = 0
    samples: int = 0
    bytes: int = 0
    wait_s: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    @property
    def elapsed_s(self) -> float:
        return max(time.perf_counter() - self.started, 1e-9)

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.elapsed_s

    @property
    def bytes_per_s(self) -> float:
        return self.bytes / self.elapsed_s

    @property
    def wait_fraction(self) -> float:
        return min(self.wait_s / self.elapsed_s, 1.0)

    def __str__(self) -> str:
        return (
            f"{self.batches} batches, {self.samples_per_s:,.0f} samples/s, "
            f"{self.bytes_per_s / 1e9:.2f} GB/s, waited {self.wait_s:.2f}s ({self.wait_fraction:.0%})"
        )


class LoffLoader:
    """Streams augmented batches of cached features onto a device, for any PyTorch loop.

    Args:
        source: dataset directory or manifest (local path, ``http(s)://``, ``s3://``), a
            brace or glob pattern, a list of shard URLs, or a :class:`~loffdata.stream.mix.Mix`.
        config: every setting (:class:`~loffdata.loader.config.LoaderConfig`, embedding the
            dataset's :class:`~loffdata.stream.config.StreamConfig`); its defaults when ``None``.
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
        gpu, device = (
            (device, UNSET) if isinstance(device, Gpu) else (None, device)
        )  # a Gpu is no config value
        check_device(device if device is not UNSET else (config or LoaderConfig()).device)
        given = dict(
            batch_size=batch_size,
            augment=augment,
            device=device,
            num_workers=num_workers,
            seed=seed,
            shuffle=shuffle,
            shuffle_buffer=shuffle_buffer,
            dtype=dtype,
            views=views,
            on_error=on_error,
            retry=retry,
            storage_options=storage_options,
            cache_dir=cache_dir,
        )
        self.config = cfg = (config or LoaderConfig()).replace(
            **{k: v for k, v in given.items() if v is not UNSET}
        )
        self.gpu = gpu or as_gpu(
            cfg.device
        )  # every CUDA call goes through it (loader/device.py); None on CPU
        self.device = self.gpu.compute if self.gpu is not None else torch.device(cfg.device)
        self.dtype, self.seed = getattr(torch, cfg.dtype), cfg.stream.seed
        # on CPU the workers convert, in parallel, while assembling; on CUDA the device does
        stream = replace(cfg.stream, batch_dtype=cfg.dtype if self.gpu is None else None)
        kind = MixedDataset if isinstance(source, Mix) else StreamingDataset
        self.dataset = kind(source, stream, rank=rank, world_size=world_size)
        self.manifest = (
            self.dataset.summary_manifest()
            if isinstance(source, Mix)
            else self.dataset.shards.manifest
        )
        num_classes = None if self.manifest is None else self.manifest.num_classes
        self.spec = resolve_augment(cfg.augment, cfg.views, num_classes)
        self.similarity_search = (
            None  # AugmentSpec.target_similarity: magnitudes searched once, here
        )
        if self.spec is not None and self.spec.target_similarity is not None:
            self.spec, self.similarity_search = self._calibrated(
                kind(
                    source,
                    replace(stream, shuffle=False, batch_size=64, batch_dtype="float32"),
                    rank=rank,
                    world_size=world_size,
                )
            )
        self._augmenter = self._build_augmenter(cfg.backend) if self.spec is not None else None
        self._init_runtime(cfg)

    def _calibrated(self, probe: StreamingDataset, samples: int = 512) -> tuple[Any, dict]:
        """The spec with noise/jitter magnitudes searched (:mod:`loffdata.augment.similarity`)
        to meet ``target_similarity`` on the first ``samples`` samples, read in order."""
        from loffdata.augment.similarity import calibrate

        parts = list(itertools.islice((b["features"].clone() for b in probe), -(-samples // 64)))
        stats = None if self.manifest is None else self.manifest.stats
        mean, std = (None, None) if stats is None else (stats.mean.tolist(), stats.std.tolist())
        return calibrate(self.spec, torch.cat(parts)[:samples], seed=self.seed, mean=mean, std=std)

    def _init_runtime(self, cfg: LoaderConfig) -> None:
        """The worker settings and the state of passes, leases and statistics."""
        self.num_workers, self.prefetch_factor = cfg.num_workers, cfg.prefetch_factor
        self.persistent_workers = cfg.persistent_workers
        self.return_extras, self.log_every, self.views = cfg.return_extras, cfg.log_every, cfg.views
        self.epoch, self.stats = 0, LoaderStats()
        self._delivered, self._offset, self._epoch_set = 0, 0, False
        self._flags, self._held, self._leases, self._rest = None, {}, {}, {}
        self._dl, self._it = None, None
        self._registry = HostRegistry(self.gpu) if self.gpu is not None else None
        # registrations are undone when this loader goes, closed or not, before buffers are unmapped
        self._unregister = (
            weakref.finalize(self, HostRegistry.clear, self._registry) if self.gpu else None
        )
        spec = self.dataset.shards.features
        self._sample_bytes = math.prod(spec.shape) * codec.DTYPES[spec.dtype].itemsize
        self._baseline = _use_count(torch.empty(1))

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

    #: how host batches reach a CUDA device: "auto", "register" or "pin-thread" (see
    #: :mod:`loffdata.loader.transfer`); read when the workers start.
    transfer: str = "auto"

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
                self._return_leases()
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
            self._flags = self._release_flags() if can_count_storage_uses() else None
            self.dataset.release_flags = self._flags
            # the DataLoader's pin thread copies each batch, so references need unpinned batches
            self.dataset.send_by_reference = self._transfer != "pin-thread"
            self._held, self._leases = {}, {}
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
        if not (
            forked
            and self.num_workers > 0
            and self._flags is not None
            and self.dataset.send_by_reference
        ):
            return None
        workers, slots = self._flags.shape
        arena = SharedArena(
            self.dataset.shards,
            batch_size=self.dataset.batch_size,
            workers=workers,
            slots=slots,
            dtype=self.dataset.batch_dtype,
        )
        self._rest = {}
        for w in range(workers):
            for s in range(slots):
                self._held[w, s] = arena.tensors(w, s)
                self._rest.update({(w, s, k): _use_count(t) for k, t in self._held[w, s].items()})
        return arena

    def _start_transfer(self) -> None:
        """Picks the host-to-device path and makes the loader's GPU the current one (the pin
        thread and DALI use the current device; without this every DDP rank opens GPU 0)."""
        self._transfer = select_transfer(self.gpu, self.transfer)
        if self.gpu is not None:
            self.gpu.make_current()

    def close(self) -> None:
        """Stops the worker processes now (they are started again by the next pass)."""
        if self._it is not None:
            _shutdown(self._it)
        self._it = self._dl = None
        self.dataset.control = None
        if self._registry is not None:
            self._registry.clear()  # waits for the device: no copy may still read a buffer
        self._held, self._leases, self._rest = {}, {}, {}
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

    def _build_augmenter(self, backend: str):
        from loffdata.augment import Augmenter

        stats = None if self.manifest is None else self.manifest.stats
        mean = None if stats is None else stats.mean.tolist()
        std = None if stats is None else stats.std.tolist()
        return Augmenter(
            self.spec, backend=backend, device=self.device, seed=self.seed, mean=mean, std=std
        )

    def _release_flags(self) -> torch.Tensor:
        """Shared flags through which batch buffers are handed back to the workers."""
        window = window_size(self.dataset.config.shuffle_buffer, self.dataset.batch_size)
        slots = pool_slots(window, self.dataset.batch_size, self.prefetch_factor)
        return torch.zeros(max(1, self.num_workers), slots, dtype=torch.int32).share_memory_()

    def _lease(self, batch: LoadedBatch) -> None:
        """Keeps a pooled batch until nothing but the loader refers to it (and, on CUDA, until
        the copy that reads it is done)."""
        slot = batch.slot
        if slot is None:
            return
        if self.dataset.send_by_reference:  # keeps the mapping, so the buffer is not mapped again
            self._hold(
                slot, batch.tensors
            )  # (the pin thread's copies are never sent again: not kept)
        batch.lease(lambda name: self._at_rest(slot, name))
        self._leases[slot] = batch

    def _hold(self, slot: tuple[int, int], host: dict[str, torch.Tensor]) -> None:
        """Keeps a pooled batch mapped; a buffer it replaces is unregistered before it goes."""
        old = self._held.get(slot)
        if old is not None and old.get("features") is not host.get("features") and self._registry:
            self.gpu.synchronize()  # rare: the worker made a new pool
            self._registry.forget(old.values())
        self._held[slot] = host

    def _at_rest(self, slot: tuple[int, int], name: str) -> int:
        """Use count of a pooled tensor that nothing outside the loader uses: one tensor when
        it came from a worker process; whatever the pool holds itself when the pool lives in
        this process (``num_workers=0``)."""
        if (*slot, name) in self._rest:  # a slot of the arena, held since the fork
            return self._rest[slot[0], slot[1], name]
        pool = self.dataset._pool if self.num_workers == 0 else None
        buf = pool.buffers.get(slot[1]) if pool is not None else None
        return self._baseline if buf is None else buf.rest_counts.get(name, self._baseline)

    def _return_leases(self) -> None:
        """Hands buffers back to their workers once no tensor outside the loader uses them."""
        for slot, batch in list(self._leases.items()):
            if batch.releasable(self.gpu):
                self._flags[slot[0], slot[1]] = 0
                del self._leases[slot]

    def _dataloader(self) -> DataLoader:
        workers = self.num_workers
        return DataLoader(
            self.dataset,
            batch_size=None,
            num_workers=workers,
            pin_memory=self._transfer == "pin-thread" and self.gpu.pin_thread,
            prefetch_factor=self.prefetch_factor if workers > 0 else None,
            persistent_workers=self._persistent,
            collate_fn=_as_is,
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
            self._lease(loaded)
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
            yield self._resolve(host)

    def _resolve(self, host: dict[str, Any]) -> LoadedBatch:
        """A worker's batch (or its reference to a pooled buffer this loader holds) -> the batch."""
        return LoadedBatch.from_worker(host, self._held)

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
            _check_mixing_labels(loaded.payload["label"], loaded.keys, self.spec.num_classes)
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
        x, y = _alias(x, b["features"]), _alias(y, b["label"])
        names = {
            "keys": [k for k in loaded.keys for _ in range(self.views)]
            if self.views > 1
            else loaded.keys,
            "indices": self._repeat(loaded.indices.clone()),
        }
        if not self.return_extras:
            return Batch(x, y, **names)
        extras = {k: _alias(self._repeat(b[k]), b[k]) for k in self.dataset.shards.extras}
        return BatchWithExtras(x, y, extras, **names)

    def _repeat(self, t: torch.Tensor) -> torch.Tensor:
        return t.repeat_interleave(self.views, dim=0) if self.views > 1 else t

    def _log(self) -> None:
        if self.log_every and self.stats.batches % self.log_every == 0:
            _log.info("loffdata epoch %d: %s", self.epoch, self.stats)


def _check_mixing_labels(y: torch.Tensor, keys: list[str], num_classes: int) -> None:
    """Mixup/cutmix need a label for every sample: checked on the host copy of the batch,
    before the labels reach the device (where ``one_hot`` would fail with a device assert).

    Raises:
        ValueError: naming the keys of the unlabelled or out-of-range samples.
    """
    bad = (y < 0) | (y >= num_classes)
    if bool(bad.any()):
        keys = [k for k, b in zip(keys, bad.tolist()) if b][:5]
        raise ValueError(
            f"mixup/cutmix need a label in [0, {num_classes}) for every sample; {int(bad.sum())} samples "
            f"of this batch have none or another (label -1 = unlabelled), e.g. keys {keys}; "
            "use a preset without mixing for unlabelled data"
        )


def _alias(t: torch.Tensor, buffer: torch.Tensor) -> torch.Tensor:
    """``t``, as a tensor object of its own if it is the batch ``buffer`` itself.

    Handing out the loader's own tensor object would hide the consumer's use of a pooled
    buffer; a separate view counts in the storage's use count, which :meth:`_return_leases`
    watches.
    """
    return t.view(t.shape) if t is buffer else t


def _as_is(batch: dict[str, Any]) -> dict[str, Any]:
    """The DataLoader's collate step: batches come whole from the dataset (the default,
    ``default_convert``, would walk every key of every batch)."""
    return batch


def _shutdown(it: Any) -> None:
    """Stops DataLoader workers now (on break, exception or normal end)."""
    shutdown_workers(it)
