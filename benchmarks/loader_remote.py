"""The remote rows of ``bench_loader.py``: the origins (the Python cloud simulator of
``tests/servers.py``, moto's S3, or nginx, each on 127.0.0.1), persistent loaders over
them, concurrent range GETs (the pull ceiling), and the prefetch study with its table."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from loader_common import (
    WarmLoader,
    consume,
    isolated,
    lazy,
    loffdata_epoch,
    median_rate,
    start_up,
)
from loader_memory import RssSampler

__all__ = ["AWS_ENV", "print_study", "prefetch_study", "remote_epochs", "serve"]

REPO = Path(__file__).resolve().parents[1]
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


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
    from loffdata.loader.loaderconfig import LoaderConfig
    from loffdata.storage.prefetch.by_shard import PrefetchConfig

    config = LoaderConfig(backend="torch", persistent_workers=True)
    kw = {"augment": None, "dtype": torch.float16, "storage_options": options}
    loader = LoffLoader(
        url, config, batch_size=batch, num_workers=workers, **kw, cache_dir=cache_dir
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
    return {"rates": rates} | {
        "worker_rss": peaks.get("worker VmRSS", 0),
        "worker_anon": peaks.get("worker RssAnon", 0),
    }


def concurrent_gets(urls: list[str], sizes: list[int], depth: int) -> int:
    """What the server can give: every shard in 8 MiB range GETs, ``depth`` in flight, no
    decoding."""
    from clients import fsspec_async

    return fsspec_async(urls, sizes, 8 << 20, depth)


def peak_in_flight(url: str) -> int:
    """The simulator's peak of requests in flight since the last call (and resets it)."""
    import urllib.request

    sys.path.insert(0, str(REPO))
    from tests.servers import PEAK_PATH

    with urllib.request.urlopen(url.rstrip("/") + PEAK_PATH) as r:
        return int(r.read())


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
def serve(
    source: str, root: Path, sim: tuple = (), origin: str = "python"
) -> Iterator[tuple[str, dict | None]]:
    """Yields ``(url of the dataset, storage_options)``; ``None`` options for local files.

    ``sim``: ``(latency in s, bytes/s per connection)`` of the HTTP server; ``origin``:
    the Python simulator or nginx (``nginx_origin.py``).
    """
    if source == "local":
        yield str(root), None
        return
    if source == "http" and origin == "nginx":
        from nginx_origin import NginxOrigin, OriginConfig

        config = OriginConfig(latency_s=sim[0], conn_bytes_per_s=int(sim[1] or 0))
        with NginxOrigin(root, config) as server:
            yield server.url, {}
        return
    yield from _serve_process(source, root, sim)


def _serve_process(source: str, root: Path, sim: tuple) -> Iterator[tuple[str, dict]]:
    """The Python simulator or moto's S3, in a process of its own."""
    target = {"http": _http_server, "s3": _s3_server}[source]
    if source == "s3":
        os.environ.update(AWS_ENV)  # the loader's workers inherit the dummy credentials
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    args = (str(root), queue, *(sim if source == "http" else ()))
    proc = ctx.Process(target=target, args=args, daemon=True)
    proc.start()
    try:
        yield queue.get(timeout=600)
    finally:
        proc.terminate()
        proc.join()


def prefetch_study(cfg: dict, url: str, options: dict, depths: list[int], repeats: int) -> dict:
    """The remote origin's extra rows: a fresh loader's start-up, a sweep of prefetch depths
    (samples/s, peak requests in flight at the simulator, peak worker RSS), 16 concurrent
    range GETs (the ceiling), the two epochs of a loader with ``cache_dir``, and the local
    page-cache rows (fresh loader, persistent loader's later epochs)."""
    b, w = cfg["batch"], cfg["workers"]
    starts = [isolated(start_up, url, b, w, options)[0] for _ in range(repeats)]
    out: dict = {"start-up": {k: statistics.median(s[k] for s in starts) for k in starts[0]}}
    out["sweep"] = _sweep(cfg, url, options, depths, repeats)
    remote = [f"{url.rstrip('/')}/{Path(u).name}" for u in cfg["urls"]]
    sizes = [os.path.getsize(u) for u in cfg["urls"]]
    got = [isolated(concurrent_gets, remote, sizes, 16) for _ in range(repeats)]
    out["gets"] = statistics.median(g[0] / g[1] for g in got) / cfg["per_sample"]
    out["cache"] = _cache_epochs(url, b, w, options, repeats)
    local = str(cfg["path"])
    out["local"] = median_rate(lambda: loffdata_epoch(local, b, w, None, torch.float16), repeats)[0]
    out["local, later epochs"] = median_rate(
        lazy(lambda: WarmLoader(local, b, w, None, torch.float16)), repeats
    )[0]
    return out


def _sweep(cfg: dict, url: str, options: dict, depths: list[int], repeats: int) -> dict:
    """Per depth and mode: the median of ``(epoch 1, epoch 2, peak in flight, worker RSS,
    worker anonymous RSS)``; the peak is the simulator's count (nginx: 0, not counted)."""
    counted = cfg["origin"] == "python"
    modes = {
        "by shard": lambda d: {"requests": d, "by_sample": False},
        "by sample": lambda d: {"sample_requests": d, "by_sample": True},
    }
    b, w, out = cfg["batch"], cfg["workers"], {}
    for depth in depths:
        for mode, prefetch in modes.items():
            runs = []
            for _ in range(repeats):
                _ = counted and peak_in_flight(url)
                got, _ = isolated(remote_epochs, url, b, w, options, prefetch(depth), None, 2)
                peak = peak_in_flight(url) if counted else 0
                runs.append((*got["rates"], peak, got["worker_rss"], got["worker_anon"]))
            out[f"{depth} {mode}"] = sorted(runs)[len(runs) // 2]
    return out


def _cache_epochs(url: str, b: int, w: int, options: dict, repeats: int) -> list[float]:
    import tempfile

    caches = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="loff-cache-") as d:
            caches.append(isolated(remote_epochs, url, b, w, options, None, d, 2)[0]["rates"])
    return [statistics.median(c[i] for c in caches) for i in range(2)]


def print_study(st: dict, r: dict, cfg: dict, sim: tuple) -> None:
    """The study's table and its ratios."""
    per = cfg["per_sample"]
    print(
        f"\n{cfg['origin']} origin: {sim[0] * 1e3:.0f} ms to first byte, "
        f"{(sim[1] or 0) / 1e6:.0f} MB/s per connection (0: no cap), on 127.0.0.1"
    )
    print(
        f"{'requests/worker, mode':<26}{'samples/s':>10}{'later':>8}{'GB/s':>7}"
        f"{'peak in flight':>16}{'worker RSS':>12}{'anon':>7} (MiB)"
    )
    for depth, (rate, later, peak, rss, anon) in st["sweep"].items():
        print(
            f"{depth:<26}{rate:>10,.0f}{later:>8,.0f}{later * per / 1e9:>7.2f}{peak:>16}"
            f"{rss / (1 << 20):>12,.0f}{anon / (1 << 20):>7,.0f}"
        )
    gets = st["gets"]
    print(f"{'16 range GETs, no decoding':<26}{gets:>10,.0f}{'':>8}{gets * per / 1e9:>7.2f}")
    c1, c2 = st["cache"]
    for name, rate in [
        ("cache_dir, epoch 1", c1),
        ("cache_dir, epoch 2", c2),
        ("local page cache", st["local"]),
        ("local, later epochs", st["local, later epochs"]),
    ]:
        print(f"{name:<26}{rate:>10,.0f}{rate * per / 1e9:>7.2f}")
    s = st["start-up"]
    print(f"fresh loader: built in {s['construct']:.2f} s, first batch at {s['first batch']:.2f} s")
    _print_study_ratios(st, r, cfg)


def _print_study_ratios(st: dict, r: dict, cfg: dict) -> None:
    one, c2 = r[f"raw read {cfg['source']}"], st["cache"][1]
    print("ratios:")
    print(f"  loffdata / one connection      {r['loffdata'] / one:.2f}   (target >= 4)")
    print(f"  loffdata / webdataset          {r['loffdata'] / r['webdataset']:.2f}   (target >= 2)")
    by_shard = r["loffdata"] / r["loffdata, by shard"]
    print(f"  loffdata / by shard            {by_shard:.2f}   (by sample: the default)")
    print(f"  loffdata / prefetch off        {r['loffdata'] / r['loffdata, prefetch off']:.2f}")
    if st["sweep"]:
        best = max(v[1] for v in st["sweep"].values())
        print(f"  best later epoch / one conn.   {best / one:.2f}")
    first = r["loffdata, first epoch"] / st["gets"]
    print(f"  first epoch / 16 range GETs    {first:.2f}   (target >= 0.8; fresh loader, built)")
    fresh = r["loffdata"] / st["gets"]
    print(f"  loffdata / 16 range GETs       {fresh:.2f}   (a fresh process, new connections)")
    print(f"  cache epoch 2 / local          {c2 / st['local']:.2f}   (target >= 0.6)")
    print(f"  cache epoch 2 / local, later   {c2 / st['local, later epochs']:.2f}")
