"""Loader throughput, measured side by side in one run and printed as ratios.

Rows (same shards, page cache warm, medians of ``repeats`` interleaved runs):

- raw read: sequential ``read()`` of the tar files in one process (the ceiling),
- webdataset: stock ``webdataset`` + msgpack decode + ``.batched()`` in a DataLoader,
- loffdata: :class:`~loffdata.loader.LoffLoader` without augmentation,
- augment alone: the augmentation on batches already in memory,
- loffdata + augment: the loader with that augmentation.

With ``--source http`` or ``--source s3`` the loffdata and webdataset rows read the same
shards through a loopback HTTP server with Range support or moto's S3 server (each in a
process of its own, on 127.0.0.1), and a "raw read <source>" row reads them sequentially
through fsspec. ``--cold`` evicts the shard files from the page cache before every row
(local disk). ``--memory`` instead runs the loader for ``--epochs`` epochs and prints the
peak resident memory of the main process and of the workers per epoch, with the bound set
by the shuffle window and the prefetch depth.

``--latency_ms`` and ``--conn_mbps`` turn the HTTP server into a *cloud simulator*
(``tests/servers.py``): every request waits that long for its first byte, and each
connection sends at most that many MB/s (the aggregate is not capped), like an object
store seen from a GPU node. The HTTP table then adds loffdata with prefetch off, a sweep
over prefetch depths (``--depths``: samples/s against the requests in flight the server
saw, and the peak RSS of a worker), the two epochs of a loader with ``cache_dir``, and the
local page-cache rows they are compared with.

Usage::

    python benchmarks/bench_loader.py                       # 8192 x 768x16x16 fp16, batch 64, 2 workers
    python benchmarks/bench_loader.py --shape 1024,32,32    # high-resolution features
    python benchmarks/bench_loader.py --quick               # tiny smoke run (CI)
    python benchmarks/bench_loader.py --n 4096 --source http  # loopback HTTP (or s3)
    python benchmarks/bench_loader.py --n 4096 --cold       # shards evicted from the page cache
    python benchmarks/bench_loader.py --n 4096 --memory     # peak RSS per epoch
    python benchmarks/bench_loader.py --n 1024 --source http --latency_ms 30 --conn_mbps 100 --augment ""
"""

from __future__ import annotations

import contextlib
import functools
import json
import multiprocessing as mp
import os
import queue as queues
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import fire
import numpy as np
import torch

from loffdata.format import codec
from loffdata.format.manifest import Manifest
from loffdata.format.writer import WriterConfig, write_dataset
from loffdata.stream.batching import pool_slots
from loffdata.stream.plan import window_size

REPO = Path(__file__).resolve().parents[1]
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


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


def isolated(fn: Callable, *args) -> tuple[float, float]:
    """Runs ``fn(*args)`` in a fresh spawned process; returns its result and the seconds it took there.

    Remote rows run this way so that rows stay independent (no connection pools, caches or
    fsspec IO threads carried from one row to the next). (It was first done to dodge forked
    workers stalling the parent's fsspec requests; loffdata.storage.remote now prevents that, see
    docs/benchmarks.md.)
    """
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
    from loffdata.loader.config import LoaderConfig
    from loffdata.storage.prefetch import PrefetchConfig

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


def remote_epochs(
    url: str,
    batch: int,
    workers: int,
    options: dict,
    prefetch: dict | None,
    cache_dir: str | None = None,
    epochs: int = 1,
) -> dict:
    """Epochs of one persistent loader over ``url``: samples/s of each, peak RSS of a worker."""
    from loffdata.loader import LoffLoader
    from loffdata.loader.config import LoaderConfig
    from loffdata.storage.prefetch import PrefetchConfig

    loader = LoffLoader(
        url,
        LoaderConfig(backend="torch", persistent_workers=True),
        batch_size=batch,
        num_workers=workers,
        augment=None,
        dtype=torch.float16,
        storage_options=options,
        cache_dir=cache_dir,
    )
    if prefetch is not None:
        loader.dataset.prefetch = PrefetchConfig(**prefetch)
    sampler, rates = RssSampler(), []
    sampler.start()
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        t0 = time.perf_counter()
        done = sum(consume(x) for x, _ in loader)
        rates.append(done / (time.perf_counter() - t0))
    sampler.sample()
    sampler.stop.set()
    loader.close()
    peaks = sampler.peaks
    return {
        "rates": rates,
        "worker_rss": peaks.get("worker VmRSS", 0),
        "worker_anon": peaks.get("worker RssAnon", 0),
    }


def concurrent_gets(urls: list[str], sizes: list[int], depth: int) -> int:
    """What the server can give: every shard in 8 MiB range GETs, ``depth`` in flight, no decoding."""
    from clients import fsspec_async

    return fsspec_async(urls, sizes, 8 << 20, depth)


def peak_in_flight(url: str) -> int:
    """The simulator's peak of requests in flight since the last call (and resets it)."""
    import urllib.request

    sys.path.insert(0, str(REPO))
    from tests.servers import PEAK_PATH

    with urllib.request.urlopen(url.rstrip("/") + PEAK_PATH) as r:
        return int(r.read())


class WarmLoader:
    """One persistent LoffLoader; its first epoch runs untimed, each call times one more.

    This is how a training run sees the loader after its first epoch: workers alive and
    their shared-memory batch buffers already mapped (see docs/loader.md).
    """

    def __init__(
        self, root: str, batch: int, workers: int, augment: str | None, dtype: torch.dtype
    ):
        from loffdata.loader import LoffLoader
        from loffdata.loader.config import LoaderConfig

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


# -- loopback servers, each in a process of its own (so they don't share the GIL with the consumer)


def _http_server(root: str, queue, latency: float = 0.0, rate: float | None = None) -> None:
    sys.path.insert(0, str(REPO))
    from tests.servers import FaultyHTTPServer

    server = FaultyHTTPServer(root, latency=latency, conn_bytes_per_s=rate)
    queue.put((server.url + "/", {}))
    server.serve_forever(poll_interval=0.05)


def _s3_server(root: str, queue) -> None:
    import logging

    import s3fs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    os.environ.update(AWS_ENV)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = {"client_kwargs": {"endpoint_url": f"http://{host}:{port}"}}
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)
    fs.mkdir("bench")
    for p in sorted(Path(root).iterdir()):
        fs.put_file(str(p), f"bench/ds/{p.name}")
    queue.put(("s3://bench/ds", options))
    threading.Event().wait()


@contextlib.contextmanager
def serve(source: str, root: Path, sim: tuple = ()) -> Iterator[tuple[str, dict | None]]:
    """Yields ``(url of the dataset, storage_options)``; ``None`` options for local files.

    ``sim``: ``(latency in s, bytes/s per connection)`` of the HTTP server.
    """
    if source == "local":
        yield str(root), None
        return
    target = {"http": _http_server, "s3": _s3_server}[source]
    if source == "s3":
        os.environ.update(AWS_ENV)  # the loader's workers inherit the dummy credentials
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(
        target=target, args=(str(root), queue, *(sim if source == "http" else ())), daemon=True
    )
    proc.start()
    try:
        yield queue.get(timeout=600)
    finally:
        proc.terminate()
        proc.join()


# -- throughput rows


def row_functions(cfg: dict, url: str, options: dict | None) -> dict[str, Callable]:
    """Each row as a function returning samples (raw reads: bytes / sample size)."""
    urls, b, w, aug = cfg["urls"], cfg["batch"], cfg["workers"], cfg["augment"]
    remote_urls = [f"{url.rstrip('/')}/{Path(u).name}" for u in urls]
    rows = {"raw read": lambda: raw_read(urls) / cfg["per_sample"]}
    if options is None:
        rows["webdataset"] = lambda: webdataset_epoch(urls, b, w)
        rows["loffdata"] = lambda: loffdata_epoch(url, b, w, None, torch.float16)
        rows["loffdata, later epochs"] = _lazy(lambda: WarmLoader(url, b, w, None, torch.float16))
    else:
        rows[f"raw read {cfg['source']}"] = lambda: _per_sample(
            isolated(raw_read_remote, remote_urls, options), cfg
        )
        rows["webdataset"] = lambda: isolated(webdataset_epoch, remote_urls, b, w, options)
        rows["loffdata"] = lambda: isolated(loffdata_epoch, url, b, w, None, torch.float16, options)
        rows["loffdata, by shard"] = lambda: isolated(
            loffdata_epoch, url, b, w, None, torch.float16, options, {"by_sample": False}
        )
        rows["loffdata, prefetch off"] = lambda: isolated(
            loffdata_epoch, url, b, w, None, torch.float16, options, {"requests": 0}
        )
    if options is None:
        rows.update(identity_rows(url, b, w))
    if aug and aug != "none":  # the identity preset has its rows above (float16, against no step)
        rows[f"{aug} alone"] = lambda: augment_alone(
            cfg["n"], cfg["dims"], b, aug, torch.float32, *cfg["stats"]
        )
        rows[f"loffdata + {aug}"] = lambda: (
            loffdata_epoch(url, b, w, aug, torch.float32)
            if options is None
            else isolated(loffdata_epoch, url, b, w, aug, torch.float32, options)
        )
        if options is None:
            rows[f"loffdata + {aug}, later"] = _lazy(
                lambda: WarmLoader(url, b, w, aug, torch.float32)
            )
    return rows


def identity_rows(url: str, b: int, w: int) -> dict[str, Callable]:
    """The identity preset against no augmentation step (both float16, fresh and warm
    loaders), and the first epoch of a fresh loader, timed from its construction to its
    last batch (what a training run waits for; the workers live on, so no teardown)."""
    return {
        "loffdata, first epoch": lambda: first_epoch(url, b, w),
        "loffdata + none": lambda: loffdata_epoch(url, b, w, "none", torch.float16),
        "loffdata + none, later": _lazy(lambda: WarmLoader(url, b, w, "none", torch.float16)),
    }


def first_epoch(root: str, batch: int, workers: int) -> tuple[int, float]:
    """``(samples, seconds)`` of a fresh loader's first pass, construction included."""
    from loffdata.loader import LoffLoader
    from loffdata.loader.config import LoaderConfig

    t0 = time.perf_counter()
    loader = LoffLoader(
        root,
        LoaderConfig(backend="torch"),
        batch_size=batch,
        num_workers=workers,
        augment=None,
        dtype=torch.float16,
    )
    done = sum(consume(x) for x, _ in loader)
    secs = time.perf_counter() - t0
    loader.close()
    return done, secs


def _print_identity_and_first_epoch(r: dict[str, float]) -> None:
    if "loffdata + none" not in r:
        return
    print(
        f"  first epoch / raw read       {r['loffdata, first epoch'] / r['raw read']:.2f}   (target >= 0.6; "
        f"later epochs {r['loffdata, later epochs'] / r['raw read']:.2f}; with teardown "
        f"{r['loffdata'] / r['raw read']:.2f})"
    )
    print(
        f"  augment='none' / None        {r['loffdata + none'] / r['loffdata']:.2f}   (target >= 0.9; "
        f"later epochs {r['loffdata + none, later'] / r['loffdata, later epochs']:.2f})"
    )


class _lazy:  # noqa: N801 (used like a function)
    """A row whose state (a warm loader) is built by :meth:`prepare`, outside the timing."""

    def __init__(self, make: Callable[[], Callable[[], int]]):
        self.make, self.obj = make, None

    def prepare(self) -> None:
        if self.obj is None:
            self.obj = self.make()

    def __call__(self) -> int:
        self.prepare()
        return self.obj()


def _per_sample(got: tuple[int, float], cfg: dict) -> tuple[float, float]:
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


def prefetch_study(cfg: dict, url: str, options: dict, depths: list[int], repeats: int) -> dict:
    """The simulator's extra rows: a sweep of prefetch depths (samples/s, peak requests in
    flight at the server, peak worker RSS), the two epochs of a loader with ``cache_dir``,
    and the local page-cache rows (fresh loader, persistent loader's later epochs)."""
    import tempfile

    b, w = cfg["batch"], cfg["workers"]
    out: dict = {"sweep": {}}
    modes = {
        "by shard": lambda d: {"requests": d, "by_sample": False},
        "by sample": lambda d: {"sample_requests": d, "by_sample": True},
    }
    for depth in depths:
        for mode, prefetch in modes.items():
            runs = []
            for _ in range(repeats):
                peak_in_flight(url)
                got, _ = isolated(remote_epochs, url, b, w, options, prefetch(depth), None, 2)
                runs.append(
                    (*got["rates"], peak_in_flight(url), got["worker_rss"], got["worker_anon"])
                )
            out["sweep"][f"{depth} {mode}"] = sorted(runs)[len(runs) // 2]
    remote = [f"{url.rstrip('/')}/{Path(u).name}" for u in cfg["urls"]]
    sizes = [os.path.getsize(u) for u in cfg["urls"]]
    got = [isolated(concurrent_gets, remote, sizes, 16) for _ in range(repeats)]
    out["gets"] = statistics.median(g[0] / g[1] for g in got) / cfg["per_sample"]
    caches = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="loff-cache-") as d:
            caches.append(isolated(remote_epochs, url, b, w, options, None, d, 2)[0]["rates"])
    out["cache"] = [statistics.median(c[i] for c in caches) for i in range(2)]
    local = str(cfg["path"])
    out["local"] = median_rate(lambda: loffdata_epoch(local, b, w, None, torch.float16), repeats)[0]
    out["local, later epochs"] = median_rate(
        _lazy(lambda: WarmLoader(local, b, w, None, torch.float16)), repeats
    )[0]
    return out


def _print_study(st: dict, r: dict, cfg: dict, sim: tuple) -> None:
    per = cfg["per_sample"]
    print(
        f"\ncloud simulator: {sim[0] * 1e3:.0f} ms to first byte, {(sim[1] or 0) / 1e6:.0f} MB/s per connection"
    )
    print(
        f"{'requests/worker, mode':<26}{'samples/s':>10}{'later':>8}{'GB/s':>7}{'peak in flight':>16}"
        f"{'worker RSS':>12}{'anon':>7} (MiB)"
    )
    for depth, (rate, later, peak, rss, anon) in st["sweep"].items():
        print(
            f"{depth:<26}{rate:>10,.0f}{later:>8,.0f}{later * per / 1e9:>7.2f}{peak:>16}"
            f"{rss / (1 << 20):>12,.0f}{anon / (1 << 20):>7,.0f}"
        )
    print(
        f"{'16 range GETs, no decoding':<26}{st['gets']:>10,.0f}{'':>8}{st['gets'] * per / 1e9:>7.2f}"
    )
    c1, c2 = st["cache"]
    for name, rate in [
        ("cache_dir, epoch 1", c1),
        ("cache_dir, epoch 2", c2),
        ("local page cache", st["local"]),
        ("local, later epochs", st["local, later epochs"]),
    ]:
        print(f"{name:<26}{rate:>10,.0f}{rate * per / 1e9:>7.2f}")
    one = r[f"raw read {cfg['source']}"]
    print("ratios:")
    print(f"  loffdata / one connection      {r['loffdata'] / one:.2f}   (target >= 4)")
    print(f"  loffdata / webdataset          {r['loffdata'] / r['webdataset']:.2f}   (target >= 2)")
    print(
        f"  loffdata / by shard            {r['loffdata'] / r['loffdata, by shard']:.2f}   (by sample: the default)"
    )
    print(f"  loffdata / prefetch off        {r['loffdata'] / r['loffdata, prefetch off']:.2f}")
    best = max(v[1] for v in st["sweep"].values())
    print(f"  best later epoch / one conn.   {best / one:.2f}")
    print(
        f"  loffdata / 16 range GETs       {r['loffdata'] / st['gets']:.2f}   (a fresh process, new connections)"
    )
    print(f"  cache epoch 2 / local          {c2 / st['local']:.2f}   (target >= 0.6)")
    print(f"  cache epoch 2 / local, later   {c2 / st['local, later epochs']:.2f}")


# -- memory over epochs


def _proc_status(pid: int | str) -> dict[str, int]:
    """VmRSS, RssAnon, RssShmem of a process in bytes (empty if it is gone)."""
    out = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, val = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssShmem"):
                out[key] = int(val.split()[0]) * 1024
    return out


def _children() -> list[str]:
    pids = []
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            pids += (task / "children").read_text().split()
    return pids


class RssSampler(threading.Thread):
    """Samples the RSS of this process and of its children every ``interval`` s; keeps peaks."""

    def __init__(self, interval: float = 0.02):
        super().__init__(daemon=True)
        self.interval, self.stop, self.peaks = interval, threading.Event(), {}

    def reset(self) -> dict[str, int]:
        peaks, self.peaks = self.peaks, {}
        return peaks

    def _peak(self, key: str, value: int) -> None:
        self.peaks[key] = max(self.peaks.get(key, 0), value)

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        """One reading (also taken at the end of each epoch, however short it was)."""
        for k, v in _proc_status("self").items():
            self._peak(f"main {k}", v)
        kids = [_proc_status(pid) for pid in _children()]
        for k in ("VmRSS", "RssAnon", "RssShmem"):
            self._peak(f"worker {k}", max((s.get(k, 0) for s in kids), default=0))
        self._peak("workers VmRSS", sum(s.get("VmRSS", 0) for s in kids))


def memory_epochs(
    cfg: dict, url: str, epochs: int, shuffle_buffer: int, prefetch: int
) -> list[dict[str, int]]:
    """Peak RSS figures of each of ``epochs`` epochs of one loader (no augmentation, float16)."""
    from loffdata.loader import LoffLoader
    from loffdata.loader.config import LoaderConfig

    loader = LoffLoader(
        url,
        LoaderConfig(prefetch_factor=prefetch),
        batch_size=cfg["batch"],
        num_workers=cfg["workers"],
        augment=None,
        dtype=torch.float16,
        shuffle_buffer=shuffle_buffer,
    )
    sampler = RssSampler()
    sampler.start()
    out = []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        sampler.reset()
        t0 = time.perf_counter()
        done = sum(consume(x) for x, _ in loader)
        sampler.sample()
        peaks = sampler.reset()
        out.append({**peaks, "samples/s": done / (time.perf_counter() - t0)})
    sampler.stop.set()
    return out


def memory_bound(cfg: dict, shuffle_buffer: int, prefetch: int) -> dict[str, int]:
    """Shared-memory batch bytes the pool may hold: per worker, and mapped by the main process."""
    slots = pool_slots(window_size(shuffle_buffer, cfg["batch"]), cfg["batch"], prefetch)
    per_worker = slots * cfg["batch"] * cfg["per_sample_feat"]
    return {"slots": slots, "per worker": per_worker, "main": per_worker * max(1, cfg["workers"])}


def _print_memory(
    epochs: list[dict], bound: dict, cfg: dict, shuffle_buffer: int, prefetch: int
) -> None:
    mib = 1 << 20
    print(
        f"\nmemory: {cfg['n']} samples of {'x'.join(map(str, cfg['dims']))} float16, batch {cfg['batch']}, "
        f"{cfg['workers']} workers, shuffle_buffer {shuffle_buffer}, prefetch {prefetch}, {os.cpu_count()} CPUs"
    )
    cols = [
        "main VmRSS",
        "main RssAnon",
        "main RssShmem",
        "worker VmRSS",
        "worker RssAnon",
        "worker RssShmem",
    ]
    print(f"{'epoch':<7}{'samples/s':>10}" + "".join(f"{c:>16}" for c in cols) + "   (peak MiB)")
    for i, e in enumerate(epochs):
        print(
            f"{i:<7}{e['samples/s']:>10,.0f}"
            + "".join(f"{e.get(c, 0) / mib:>16,.0f}" for c in cols)
        )
    print(
        f"bound (pool of {bound['slots']} batch buffers per worker): shared memory <= "
        f"{bound['per worker'] / mib:,.0f} MiB per worker, {bound['main'] / mib:,.0f} MiB mapped in the main process"
    )
    growth = (
        max(e["main VmRSS"] for e in epochs[1:]) - epochs[0]["main VmRSS"] if len(epochs) > 1 else 0
    )
    print(
        f"main VmRSS growth after epoch 0: {growth / mib:+,.0f} MiB; "
        f"children ru_maxrss {_children_maxrss() / mib:,.0f} MiB"
    )


def _children_maxrss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


# -- entry point


def parse_shape(shape) -> tuple[int, ...]:
    """``"768,16,16"``, or the tuple fire makes of ``--shape 768,16,16``."""
    if isinstance(shape, int):
        return (shape,)
    return tuple(int(s) for s in (shape.split(",") if isinstance(shape, str) else shape))


def _config(n, shape, batch, workers, shard_samples, augment, root, source) -> dict:
    dims = parse_shape(shape)
    path = Path(root) / f"{n}x{'x'.join(map(str, dims))}"
    manifest = build_data(path, n, dims, shard_samples)
    feat = int(np.prod(dims)) * codec.DTYPES[manifest.features.dtype].itemsize
    return {
        "n": n,
        "dims": dims,
        "batch": batch,
        "workers": workers,
        "augment": augment,
        "source": source,
        "path": path,
        "urls": manifest.shard_urls(str(path)),
        "per_sample": manifest.num_bytes / n,
        "per_sample_feat": feat,
        "stats": (manifest.stats.mean.tolist(), manifest.stats.std.tolist()),
    }


def main(
    n: int = 8192,
    shape: str = "768,16,16",
    batch: int = 64,
    workers: int = 2,
    shard_samples: int = 256,
    repeats: int = 3,
    augment: str = "loffta",
    root: str = "/tmp/loffdata-bench",
    quick: bool = False,
    json_out: str | None = None,
    source: str = "local",
    cold: bool = False,
    memory: bool = False,
    epochs: int = 4,
    shuffle_buffer: int = 1024,
    prefetch: int = 2,
    latency_ms: float = 0.0,
    conn_mbps: float = 0.0,
    depths: str = "1,2,4,8,16,32",
    plot_out: str | None = None,
) -> dict:
    """Runs every row (or the memory run) and prints the table; returns the figures.

    ``latency_ms``/``conn_mbps`` (MB/s per connection, 0: no cap): the HTTP cloud simulator.
    """
    if source not in ("local", "http", "s3"):
        raise ValueError(f"source must be local, http or s3, not {source!r}")
    if quick:
        n, shape, batch, shard_samples, repeats, epochs = 128, "32,8,8", 16, 32, 1, min(epochs, 2)
    cfg = _config(n, shape, batch, workers, shard_samples, augment, root, source)
    raw_read(cfg["urls"])  # warm the page cache
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    sim = (latency_ms / 1e3, conn_mbps * 1e6 or None)
    study = None
    with serve(source, cfg["path"], sim) as (url, options):
        if memory:
            return _memory(cfg, url, epochs, shuffle_buffer, prefetch, json_out)
        result = measure(row_functions(cfg, url, options), repeats, cfg["urls"] if cold else None)
        if source == "http" and (latency_ms or conn_mbps):
            study = prefetch_study(cfg, url, options, list(parse_shape(depths)), repeats)
    _print(result, cfg, cold)
    if study is not None:
        _print_study(study, result, cfg, sim)
        if plot_out:
            from plot_remote import plot_prefetch

            plot_prefetch(study, result, cfg, sim, plot_out)
    if json_out:
        config = {k: cfg[k] for k in ("n", "dims", "batch", "workers", "source")} | {
            "cold": cold,
            "repeats": repeats,
        }
        config |= {"latency_ms": latency_ms, "conn_mbps": conn_mbps}
        out = {"config": config, "samples_per_s": result} | ({"simulator": study} if study else {})
        Path(json_out).write_text(json.dumps(out, indent=1, default=str))
    return result


def _memory(
    cfg: dict, url: str, epochs: int, shuffle_buffer: int, prefetch: int, json_out: str | None
) -> dict:
    figures = memory_epochs(cfg, url, epochs, shuffle_buffer, prefetch)
    bound = memory_bound(cfg, shuffle_buffer, prefetch)
    _print_memory(figures, bound, cfg, shuffle_buffer, prefetch)
    result = {"epochs": figures, "bound": bound}
    if json_out:
        Path(json_out).write_text(json.dumps(result, indent=1))
    return result


def _print(r: dict[str, float], cfg: dict, cold: bool) -> None:
    per_sample, augment = cfg["per_sample"], cfg["augment"]
    where = "page cache evicted before each row" if cold else "page cache warm"
    print(
        f"\n{cfg['n']} samples of {'x'.join(map(str, cfg['dims']))} float16 ({per_sample / 1024:.0f} KiB), "
        f"batch {cfg['batch']}, {cfg['workers']} workers, {os.cpu_count()} CPUs, source {cfg['source']}, {where}"
    )
    print(f"{'row':<24}{'samples/s':>12}{'GB/s':>8}")
    for name, rate in r.items():
        print(f"{name:<24}{rate:>12,.0f}{rate * per_sample / 1e9:>8.2f}")
    print("ratios:")
    print(f"  loffdata / raw read          {r['loffdata'] / r['raw read']:.2f}   (target >= 0.6)")
    if cfg["source"] != "local":
        print(
            f"  loffdata / raw read {cfg['source']:<8} {r['loffdata'] / r['raw read ' + cfg['source']]:.2f}"
        )
    print(f"  loffdata / webdataset        {r['loffdata'] / r['webdataset']:.2f}   (target >= 2.5)")
    if "loffdata, later epochs" in r:
        warm = r["loffdata, later epochs"]
        print(f"  later epochs / raw read      {warm / r['raw read']:.2f}   (target >= 0.6)")
        print(f"  later epochs / webdataset    {warm / r['webdataset']:.2f}   (target >= 2.5)")
    _print_identity_and_first_epoch(r)
    if augment and augment != "none":
        print(
            f"  loffdata+{augment} / {augment} alone  {r[f'loffdata + {augment}'] / r[f'{augment} alone']:.2f}   (target >= 0.7)"
        )
        if f"loffdata + {augment}, later" in r:
            print(
                f"  later epochs, {augment} / alone  {r[f'loffdata + {augment}, later'] / r[f'{augment} alone']:.2f}   (target >= 0.7)"
            )


@functools.wraps(main)  # fire reads main's options (and --help) through __wrapped__
def cli(*args, **kwargs) -> None:
    """Command-line entry point (fire); see :func:`main` for the options."""
    main(*args, **kwargs)


if __name__ == "__main__":
    fire.Fire(cli)
