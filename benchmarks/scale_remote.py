"""The HTTP rows of ``bench_scale.py``: the same hardlinked caches served by the nginx origin
on loopback (``nginx_origin.py``: 30 ms to first byte, 100 MB/s per connection), each size
measured in a fresh process: manifest fetch + load, ``LoffLoader(url)`` construction, the
first batch and the steady rate, peak RSS of main + workers.

Usage::

    python benchmarks/scale_remote.py --sizes 10000,1000000   # 10 k and 1 M samples
    python benchmarks/scale_remote.py --quick                 # smoke run
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import fire

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_scale  # noqa: E402
from nginx_origin import NginxOrigin, OriginConfig  # noqa: E402

__all__ = ["remote_rows", "main"]


def remote_rows(
    work: Path,
    sizes: tuple[int, ...],
    per_shard: int,
    dims: tuple,
    origin: OriginConfig | None = None,
    **how: int,
) -> list[tuple[int, dict]]:
    """``(samples, figures)`` of each size, its cache built, served by nginx and measured by
    ``bench_scale``'s own child process over the origin's URL, then removed."""
    base = work / "base"
    manifest = bench_scale._base_shard(base, per_shard, dims)
    rows = []
    for n in sizes:
        root = work / f"n{n}"
        bench_scale.build(root, base, manifest, max(1, n // per_shard))
        with NginxOrigin(root, origin or OriginConfig()) as server:
            r = bench_scale._measure(server.url, how["batch"], how["workers"], how["steady"])
        rows.append(bench_scale.finish_row(root, n, r, " over nginx"))
    return rows


def main(
    sizes: str = "10000,1000000",
    per_shard: int = 250,
    shape: str = "768,16,16",
    batch: int = 64,
    workers: int = 2,
    steady: int = 40,
    quick: bool = False,
    tmp: str | None = None,
    latency_ms: float = 30.0,
    conn_mbps: float = 100.0,
) -> None:
    """Builds each cache, serves and measures it, prints the rows (markdown)."""
    if quick:
        sizes, per_shard, shape, steady = "1000", 50, "8,4,4", 5
    dims = bench_scale._ints(shape)
    origin = OriginConfig(latency_s=latency_ms / 1e3, conn_bytes_per_s=int(conn_mbps * 1e6))
    work = Path(tempfile.mkdtemp(prefix="bench-scale-http-", dir=tmp))
    try:
        how = {"batch": batch, "workers": workers, "steady": steady}
        rows = remote_rows(work, bench_scale._ints(sizes), per_shard, dims, origin, **how)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"shape {dims} float16, {per_shard} samples a shard, batch {batch}, {workers} workers, "
        f"nginx on 127.0.0.1 ({latency_ms:.0f} ms to first byte, {conn_mbps:.0f} MB/s a "
        "connection); `Manifest.load` is the fetch + parse over HTTP\n"
    )
    for n, r in rows:
        print(bench_scale._row(f"{n:,} (HTTP)", r))


if __name__ == "__main__":
    fire.Fire(main)
