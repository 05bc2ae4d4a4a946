"""Async HTTP clients for ranged GETs, side by side against the cloud simulator.

Every client fetches the same shards in ``block`` byte ranges with ``depth`` requests in
flight, from ``tests/servers.py``'s server in a process of its own (``latency_ms`` to first
byte, ``conn_mbps`` MB/s per connection). Printed: MB/s, and the client process's CPU
seconds per GB (what is left for decoding on a busy node).

- ``fsspec-async``: loffdata's path (:func:`loffdata.storage.pinned.fetch_range`:
  fsspec's HTTPFileSystem aiohttp session, ``If-Match`` pinning), coroutines on fsspec's loop;
- ``fsspec-threads``: fsspec's synchronous ``cat_file`` from a thread pool;
- ``obstore``: obstore's ``HTTPStore`` and ``get_range_async`` (Rust ``object_store``), if
  importable (``--extra_path`` adds a directory to ``sys.path``, e.g. a ``pip --target``).

Usage::

    python benchmarks/bench_clients.py --n 1024 --latency_ms 30 --conn_mbps 100 --depths 1,4,16
"""

from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path

import fire
from bench_loader import build_data, isolated, parse_shape, serve
from clients import CLIENTS


def _measure(
    name: str, urls: list[str], sizes: list[int], block: int, depth: int, extra_path: str
) -> tuple:
    if extra_path:
        sys.path.append(extra_path)
    cpu = time.process_time()
    got = CLIENTS[name](urls, sizes, block, depth)
    return got, time.process_time() - cpu


def main(
    n: int = 1024,
    shape: str = "768,16,16",
    shard_samples: int = 256,
    block: int = 8 << 20,
    depths: str = "1,4,16",
    latency_ms: float = 30.0,
    conn_mbps: float = 100.0,
    root: str = "/tmp/loffdata-bench",
    extra_path: str = "",
    clients: str = "fsspec-async,fsspec-threads,obstore",
    repeats: int = 1,
) -> dict:
    """Runs every client at every depth; prints MB/s and CPU s/GB."""
    dims = parse_shape(shape)
    path = Path(root) / f"{n}x{'x'.join(map(str, dims))}"
    m = build_data(path, n, dims, shard_samples)
    names, sizes = [s.name for s in m.shards], [s.bytes for s in m.shards]
    out: dict = {}
    with serve("http", path, (latency_ms / 1e3, conn_mbps * 1e6 or None)) as (url, _):
        urls = [f"{url.rstrip('/')}/{nm}" for nm in names]
        print(
            f"\n{sum(sizes) / 1e6:,.0f} MB in {len(urls)} objects, {block >> 20} MiB ranges, "
            "simulator "
            f"{latency_ms:.0f} ms / {conn_mbps:.0f} MB/s per connection, {os.cpu_count()} CPUs"
        )
        print(f"{'client':<16}{'in flight':>10}{'MB/s':>10}{'CPU s/GB':>10}")
        for name in clients.split(","):
            out.update(_client_rows(name, urls, sizes, block, depths, extra_path, repeats))
    return out


def _client_rows(
    name: str,
    urls: list[str],
    sizes: list[int],
    block: int,
    depths: str,
    extra_path: str,
    repeats: int,
) -> dict:
    """One client at every depth (the median of ``repeats`` runs); prints a row per depth."""
    out: dict = {}
    for depth in parse_shape(depths):
        try:
            runs = [
                isolated(_measure, name, urls, sizes, block, depth, extra_path)
                for _ in range(repeats)
            ]
        except RuntimeError as err:
            print(f"{name:<16}{depth:>10}   failed: {err}")
            break
        (got, cpu), secs = sorted(runs, key=lambda r: r[1])[len(runs) // 2]
        out[(name, depth)] = (got / secs / 1e6, cpu / (got / 1e9))
        print(
            f"{name:<16}{depth:>10}{got / secs / 1e6:>10,.0f}{cpu / (got / 1e9):>10.2f}",
            flush=True,
        )
    return out


@functools.wraps(main)  # fire reads main's options (and --help) through __wrapped__
def cli(*args, **kwargs) -> None:
    """Command-line entry point (fire); see :func:`main` for the options."""
    main(*args, **kwargs)


if __name__ == "__main__":
    fire.Fire(cli)
