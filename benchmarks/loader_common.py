"""What every row of ``bench_loader.py`` shares: the data, the raw reads, the webdataset
and loffdata epochs, warm loaders, and the timing (medians of interleaved runs, remote rows
in processes of their own)."""

from __future__ import annotations

import contextlib
import functools
import multiprocessing as mp
import os
import queue as queues
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from loffdata.format import codec
from loffdata.format.manifest import Manifest
from loffdata.format.writer import WriterConfig, write_dataset

__all__ = [
    "WarmLoader",
    "augment_alone",
    "build_data",
    "consume",
    "evict",
    "first_epoch",
    "in_process",
    "isolated",
    "lazy",
    "loffdata_epoch",
    "measure",
    "median_rate",
    "parse_shape",
    "per_sample",
    "raw_read",
    "raw_read_remote",
    "start_up",
    "webdataset_epoch",
]


def build_data(root: Path, n: int, shape: tuple[int, ...], shard_samples: int) -> Manifest:
    """Writes (or reuses) ``n`` random float16 samples of ``shape`` under ``root``."""
    try:
        m = Manifest.load(str(root))
        if m.num_samples == n and m.features.shape == shape:
            return m
    except Exception:
        pass
    rng = np.random.default_rng(0)
    base = rng.standard_normal((64, *shape)).astype(np.float16)
    items = ((f"b{i:08d}", base[i % 64], i % 10) for i in range(n))
    return write_dataset(
        str(root), items, config=WriterConfig(max_samples=shard_samples, dtype=None)
    )


def raw_read(urls: list[str]) -> int:
    """Reads every file sequentially in 1 MiB chunks; returns bytes read."""
    total = 0
    for url in urls:
        with open(url, "rb", buffering=0) as f:
            while chunk := f.read(1 << 20):
                total += len(chunk)
    return total


def raw_read_remote(urls: list[str], options: dict) -> int:
    """Reads every URL sequentially through fsspec in 8 MiB chunks; returns bytes read."""
    total = 0
    for url in urls:
        with _open_url(url, options) as f:
            while chunk := f.read(8 << 20):
                total += len(chunk)
    return total


def _timed_call(fn: Callable, args: tuple, queue) -> None:
    mp.set_start_method("fork", force=True)  # DataLoader workers as in the parent, not spawned
    t0 = time.perf_counter()
    units = fn(*args)
    queue.put((units, time.perf_counter() - t0))


#: ``isolated`` runs its function here instead of in a spawned process (see ``in_process``)
_HERE = {"on": False}


@contextlib.contextmanager
def in_process(on: bool = True):
    """Within it, :func:`isolated` calls its function in this process (smoke runs: every row
    still runs, without an interpreter start per row; the rows are no longer independent)."""
    saved, _HERE["on"] = _HERE["on"], on
    try:
        yield
    finally:
        _HERE["on"] = saved


def isolated(fn: Callable, *args) -> tuple[float, float]:
    """Runs ``fn(*args)`` in a fresh spawned process; returns its result and the seconds it
    took there (inside :func:`in_process`: in this process).

    Remote rows run this way so that rows stay independent (no connection pools, caches or
    fsspec IO threads carried from one row to the next). (It was first done to dodge forked
    workers stalling the parent's fsspec requests; loffdata.storage.shardfile now prevents that, see
    docs/benchmarks.md.)
    """
    if _HERE["on"]:
        t0 = time.perf_counter()
        return fn(*args), time.perf_counter() - t0
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_timed_call, args=(fn, args, queue))
    proc.start()
    try:
        while True:
            with contextlib.suppress(queues.Empty):
                return queue.get(timeout=1)
            if not proc.is_alive():
                raise RuntimeError(
                    f"{fn.__name__} failed in its process (exit code {proc.exitcode})"
                )
    finally:
        proc.join()


def evict(paths: list[str]) -> None:
    """Drops the files' pages from the page cache (they are clean, so nothing is written)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _decode(sample: dict) -> tuple[torch.Tensor, int]:
    return torch.from_numpy(codec.decode(sample["feat.msgpack"]).copy()), int(sample["cls"])


def _open_url(url: str, options: dict):
    import fsspec

    fs, path = fsspec.core.url_to_fs(url, **options)
    return fs.open(path, "rb", block_size=8 << 20)


def _fsspec_streams(src, options: dict):
    """A webdataset stage opening each shard URL with fsspec (instead of a ``curl`` pipe)."""
    for sample in src:
        with _open_url(sample["url"], options) as f:
            yield {**sample, "stream": f}


def webdataset_pipeline(urls: list[str], batch: int, options: dict | None):
    """Stock webdataset for local files; the same stages over fsspec streams for URLs."""
    import webdataset as wds
    from webdataset import tariterators

    if options is None:
        return (
            wds.WebDataset(urls, shardshuffle=False, empty_check=False).map(_decode).batched(batch)
        )
    return wds.DataPipeline(
        wds.SimpleShardList(urls),
        wds.split_by_worker,
        functools.partial(_fsspec_streams, options=options),
        tariterators.tar_file_expander,
        tariterators.group_by_keys,
        wds.map(_decode),
        wds.batched(batch),
    )


def webdataset_epoch(urls: list[str], batch: int, workers: int, options: dict | None = None) -> int:
    """Stock webdataset: decode msgpack to tensors, batch, DataLoader workers; returns samples."""
    ds = webdataset_pipeline(urls, batch, options)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers)
    return sum(consume(x) for x, _ in loader)


def consume(x: torch.Tensor) -> int:
    """What any training step does at least: touch every page of the batch once."""
    x.reshape(-1)[:: 4096 // x.element_size()].float().sum()
    return len(x)


def loffdata_epoch(
    root: str,
    batch: int,
    workers: int,
    augment: str | None,
    dtype: torch.dtype,
    options: dict | None = None,
    prefetch: dict | None = None,
) -> int:
    from loffdata.loader import LoffLoader
    from loffdata.loader.loaderconfig import LoaderConfig
    from loffdata.storage.prefetch.by_shard import PrefetchConfig

    loader = LoffLoader(
        root,
        LoaderConfig(backend="torch"),
        batch_size=batch,
        num_workers=workers,
        augment=augment,
        dtype=dtype,
        storage_options=options or {},
    )
    if prefetch is not None:
        loader.dataset.prefetch = PrefetchConfig(**prefetch)
    return sum(consume(x) for x, _ in loader)


def _fresh_loader(root: str, batch: int, workers: int, options: dict | None) -> Any:
    from loffdata.loader import LoffLoader
    from loffdata.loader.loaderconfig import LoaderConfig

    return LoffLoader(
        root,
        LoaderConfig(backend="torch"),
        batch_size=batch,
        num_workers=workers,
        augment=None,
        dtype=torch.float16,
        storage_options=options or {},
    )


def first_epoch(
    root: str, batch: int, workers: int, options: dict | None = None
) -> tuple[int, float]:
    """``(samples, seconds)`` of a fresh loader's first pass, construction included."""
    t0 = time.perf_counter()
    loader = _fresh_loader(root, batch, workers, options)
    done = sum(consume(x) for x, _ in loader)
    secs = time.perf_counter() - t0
    loader.close()
    return done, secs


def start_up(root: str, batch: int, workers: int, options: dict | None = None) -> dict:
    """Seconds from nothing to a fresh loader (``construct``) and to its first batch."""
    t0 = time.perf_counter()
    loader = _fresh_loader(root, batch, workers, options)
    built = time.perf_counter() - t0
    it = iter(loader)
    consume(next(it)[0])
    first = time.perf_counter() - t0
    del it
    loader.close()
    return {"construct": built, "first batch": first}


class WarmLoader:
    """One persistent LoffLoader; its first epoch runs untimed, each call times one more.

    This is how a training run sees the loader after its first epoch: workers alive and
    their shared-memory batch buffers already mapped (see docs/loader.md).
    """

    def __init__(
        self, root: str, batch: int, workers: int, augment: str | None, dtype: torch.dtype
    ):
        from loffdata.loader import LoffLoader
        from loffdata.loader.loaderconfig import LoaderConfig

        config = LoaderConfig(backend="torch", persistent_workers=True)
        self.loader = LoffLoader(
            root, config, batch_size=batch, num_workers=workers, augment=augment, dtype=dtype
        )
        self.epoch = 0
        self()

    def __call__(self) -> int:
        self.loader.set_epoch(self.epoch)
        self.epoch += 1
        return sum(consume(x) for x, _ in self.loader)


def augment_alone(
    n: int, shape: tuple[int, ...], batch: int, augment: str, dtype: torch.dtype, mean, std
) -> int:
    """The loader's device-side work on batches already in memory; returns samples."""
    from loffdata.augment import Augmenter, AugmentSpec

    aug = Augmenter(AugmentSpec.preset(augment), backend="torch", mean=mean, std=std)
    x16 = torch.randn(batch, *shape).to(torch.float16)
    y = torch.zeros(batch, dtype=torch.int64)
    done = 0
    for start in range(0, n, batch):
        idx = np.arange(start, start + batch)
        out, _ = aug(x16.to(dtype), y, indices=idx, epoch=0)
        done += consume(out)
    return done


def median_rate(fn: Callable[[], float | tuple[float, float]], repeats: int) -> tuple[float, float]:
    """Median units/s of ``fn``, timed here unless it returns ``(units, seconds)`` itself."""
    if hasattr(fn, "prepare"):
        fn.prepare()  # rows with state (a warm loader) build it outside the timing
    rates, units = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        got = fn()
        units, secs = got if isinstance(got, tuple) else (got, time.perf_counter() - t0)
        rates.append(units / secs)
    return statistics.median(rates), units


class lazy:  # noqa: N801 (used like a function)
    """A row whose state (a warm loader) is built by :meth:`prepare`, outside the timing."""

    def __init__(self, make: Callable[[], Callable[[], int]]):
        self.make, self.obj = make, None

    def prepare(self) -> None:
        if self.obj is None:
            self.obj = self.make()

    def __call__(self) -> int:
        self.prepare()
        return self.obj()


def per_sample(got: tuple[int, float], cfg: dict) -> tuple[float, float]:
    return got[0] / cfg["per_sample"], got[1]


def measure(
    rows: dict[str, Callable], repeats: int, cold_paths: list[str] | None
) -> dict[str, float]:
    """Medians of ``repeats`` interleaved runs of every row (evicting before each if cold)."""
    rates: dict[str, list[float]] = {}
    for _ in range(repeats):  # interleave the rows so that machine noise hits all alike
        for name, fn in rows.items():
            if cold_paths:
                evict(cold_paths)
            rates.setdefault(name, []).append(median_rate(fn, 1)[0])
    return {k: statistics.median(v) for k, v in rates.items()}


def parse_shape(shape) -> tuple[int, ...]:
    """``"768,16,16"``, or the tuple fire makes of ``--shape 768,16,16``."""
    if isinstance(shape, int):
        return (shape,)
    return tuple(int(s) for s in (shape.split(",") if isinstance(shape, str) else shape))
