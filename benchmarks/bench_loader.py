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

``--latency_ms`` and ``--conn_mbps`` turn the HTTP server into a *cloud simulator*: every
request waits that long for its first byte, and each connection sends at most that many
MB/s (the aggregate is not capped), like an object store seen from a GPU node. The server
is the Python simulator of ``tests/servers.py``, or with ``--origin nginx`` an nginx on
loopback (``nginx_origin.py``: sendfile, almost no CPU of its own, so the figures are the
client's). The HTTP table then adds the time to a fresh loader's first batch, its first
epoch against 16 concurrent range GETs (the pull ceiling, measured in the same run), a
sweep over prefetch depths (``--depths``: samples/s, the requests in flight the simulator
saw, the peak RSS of a worker), the two epochs of a loader with ``cache_dir``, and the
local page-cache rows they are compared with.

Usage::

    python benchmarks/bench_loader.py                     # 8192 x 768x16x16 fp16, batch 64
    python benchmarks/bench_loader.py --shape 1024,32,32  # high-resolution features
    python benchmarks/bench_loader.py --quick             # tiny smoke run (CI)
    python benchmarks/bench_loader.py --n 4096 --source http  # loopback HTTP (or s3)
    python benchmarks/bench_loader.py --n 4096 --cold     # shards evicted from the page cache
    python benchmarks/bench_loader.py --n 4096 --memory   # peak RSS per epoch
    python benchmarks/bench_loader.py --n 4096 --source http --origin nginx \
        --latency_ms 30 --conn_mbps 100 --augment ""     # an object store on loopback

The rows live beside this script: ``loader_common.py`` (data, epochs, timing),
``loader_remote.py`` (origins, remote rows, the prefetch study), ``loader_memory.py``.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import fire
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the row modules beside this one
from loader_common import (  # noqa: E402
    WarmLoader,
    augment_alone,
    build_data,
    first_epoch,
    in_process,
    isolated,
    lazy,
    loffdata_epoch,
    measure,
    parse_shape,
    per_sample,
    raw_read,
    raw_read_remote,
    webdataset_epoch,
)
from loader_memory import memory_bound, memory_epochs, print_memory  # noqa: E402
from loader_remote import prefetch_study, print_study, serve  # noqa: E402

from loffdata.format import codec  # noqa: E402

__all__ = ["WarmLoader", "build_data", "main", "parse_shape", "raw_read"]

F16 = torch.float16


# -- throughput rows


def row_functions(cfg: dict, url: str, options: dict | None) -> dict[str, Callable]:
    """Each row as a function returning samples (raw reads: bytes / sample size)."""
    rows = {"raw read": lambda: raw_read(cfg["urls"]) / cfg["per_sample"]}
    rows |= local_rows(cfg, url) if options is None else remote_rows(cfg, url, options)
    rows |= augment_rows(cfg, url, options)
    return rows


def local_rows(cfg: dict, url: str) -> dict[str, Callable]:
    """webdataset, fresh and persistent loaders, the identity preset, the first epoch."""
    b, w = cfg["batch"], cfg["workers"]
    return {
        "webdataset": lambda: webdataset_epoch(cfg["urls"], b, w),
        "loffdata": lambda: loffdata_epoch(url, b, w, None, F16),
        "loffdata, later epochs": lazy(lambda: WarmLoader(url, b, w, None, F16)),
        **identity_rows(url, b, w),
    }


def remote_rows(cfg: dict, url: str, options: dict) -> dict[str, Callable]:
    """One sequential GET, webdataset over fsspec, loffdata (by sample: the default; by
    shard; prefetch off) and a fresh loader's first epoch, each in a process of its own."""
    b, w = cfg["batch"], cfg["workers"]
    remote = [f"{url.rstrip('/')}/{Path(u).name}" for u in cfg["urls"]]
    return {
        f"raw read {cfg['source']}": lambda: per_sample(
            isolated(raw_read_remote, remote, options), cfg
        ),
        "webdataset": lambda: isolated(webdataset_epoch, remote, b, w, options),
        "loffdata": lambda: isolated(loffdata_epoch, url, b, w, None, F16, options),
        "loffdata, by shard": lambda: isolated(
            loffdata_epoch, url, b, w, None, F16, options, {"by_sample": False}
        ),
        "loffdata, prefetch off": lambda: isolated(
            loffdata_epoch, url, b, w, None, F16, options, {"requests": 0}
        ),
        "loffdata, first epoch": lambda: isolated(first_epoch, url, b, w, options)[0],
    }


def augment_rows(cfg: dict, url: str, options: dict | None) -> dict[str, Callable]:
    """The augmentation alone and in the loader (the identity preset has its own rows)."""
    b, w, aug = cfg["batch"], cfg["workers"], cfg["augment"]
    if not aug or aug == "none":
        return {}
    rows = {
        f"{aug} alone": lambda: augment_alone(
            cfg["n"], cfg["dims"], b, aug, torch.float32, *cfg["stats"]
        ),
        f"loffdata + {aug}": lambda: (
            loffdata_epoch(url, b, w, aug, torch.float32)
            if options is None
            else isolated(loffdata_epoch, url, b, w, aug, torch.float32, options)
        ),
    }
    if options is None:
        rows[f"loffdata + {aug}, later"] = lazy(lambda: WarmLoader(url, b, w, aug, torch.float32))
    return rows


def identity_rows(url: str, b: int, w: int) -> dict[str, Callable]:
    """The identity preset against no augmentation step (both float16, fresh and warm
    loaders), and the first epoch of a fresh loader, timed from its construction to its
    last batch (what a training run waits for; the workers live on, so no teardown)."""
    return {
        "loffdata, first epoch": lambda: first_epoch(url, b, w),
        "loffdata + none": lambda: loffdata_epoch(url, b, w, "none", F16),
        "loffdata + none, later": lazy(lambda: WarmLoader(url, b, w, "none", F16)),
    }


def _print_identity_and_first_epoch(r: dict[str, float]) -> None:
    if "loffdata + none" not in r:
        return
    raw = r["raw read"]
    print(
        f"  first epoch / raw read       {r['loffdata, first epoch'] / raw:.2f}   "
        f"(target >= 0.6; later epochs {r['loffdata, later epochs'] / raw:.2f}; "
        f"with teardown {r['loffdata'] / raw:.2f})"
    )
    print(
        f"  augment='none' / None        {r['loffdata + none'] / r['loffdata']:.2f}   "
        f"(target >= 0.9; later epochs "
        f"{r['loffdata + none, later'] / r['loffdata, later epochs']:.2f})"
    )


# -- entry point


def _config(n, shape, batch, workers, shard_samples, augment, root, source, origin) -> dict:
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
        "origin": origin if source == "http" else source,
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
    origin: str = "python",
    in_process: bool = False,
) -> dict:
    """Runs every row (or the memory run), prints the table, returns the figures. ``latency_ms``,
    ``conn_mbps`` (per connection): the cloud simulator; ``origin``: ``python`` or ``nginx``;
    ``in_process``: each remote row here, not in a spawned process (smoke runs)."""
    if source not in ("local", "http", "s3") or origin not in ("python", "nginx"):
        raise ValueError(f"source: local, http or s3 ({source!r}); origin: python or nginx")
    if quick:
        n, shape, batch, shard_samples, repeats, epochs = 128, "32,8,8", 16, 32, 1, min(epochs, 2)
    cfg = _config(n, shape, batch, workers, shard_samples, augment, root, source, origin)
    cfg |= {"sim": (latency_ms / 1e3, conn_mbps * 1e6 or None), "cold": cold, "repeats": repeats}
    _prepare(cfg, in_process)
    if memory:
        with serve(source, cfg["path"], cfg["sim"], origin) as (url, _):
            return _memory(cfg, url, epochs, shuffle_buffer, prefetch, json_out)
    result, study = _run(cfg, list(parse_shape(depths)) if depths else [], in_process)
    _report(result, study, cfg, plot_out, json_out)
    return result


def _prepare(cfg: dict, here: bool) -> None:
    """Warms the page cache; a real run gives torch every core (a smoke run in a test
    process leaves the thread count as it is)."""
    raw_read(cfg["urls"])
    if not here:
        torch.set_num_threads(max(1, os.cpu_count() or 1))


def _report(
    result: dict, study: dict | None, cfg: dict, plot_out: str | None, json_out: str | None
) -> None:
    _print(result, cfg, cfg["cold"])
    if study is not None:
        print_study(study, result, cfg, cfg["sim"])
        if plot_out:
            from plot_remote import plot_prefetch

            plot_prefetch(study, result, cfg, cfg["sim"], plot_out)
    if json_out:
        _write_json(json_out, cfg, result, study)


def _run(cfg: dict, depths: list[int], here: bool) -> tuple[dict[str, float], dict | None]:
    """The rows, and the remote study where the origin is a simulator (or nginx); ``here``:
    the rows meant for processes of their own run in this one."""
    serving = serve(cfg["source"], cfg["path"], cfg["sim"], cfg["origin"])
    with serving as (url, options), in_process(here):
        cold = cfg["urls"] if cfg["cold"] else None
        result = measure(row_functions(cfg, url, options), cfg["repeats"], cold)
        study = None
        if cfg["source"] == "http" and (any(cfg["sim"]) or cfg["origin"] == "nginx"):
            study = prefetch_study(cfg, url, options, depths, cfg["repeats"])
    return result, study


def _write_json(path: str, cfg: dict, result: dict, study: dict | None) -> None:
    config = {k: cfg[k] for k in ("n", "dims", "batch", "workers", "source", "origin")}
    config |= {"cold": cfg["cold"], "repeats": cfg["repeats"]}
    config |= {"latency_ms": cfg["sim"][0] * 1e3, "conn_mbps": (cfg["sim"][1] or 0) / 1e6}
    out = {"config": config, "samples_per_s": result} | ({"simulator": study} if study else {})
    Path(path).write_text(json.dumps(out, indent=1, default=str))


def _memory(
    cfg: dict, url: str, epochs: int, shuffle_buffer: int, prefetch: int, json_out: str | None
) -> dict:
    figures = memory_epochs(cfg, url, epochs, shuffle_buffer, prefetch)
    bound = memory_bound(cfg, shuffle_buffer, prefetch)
    print_memory(figures, bound, cfg, shuffle_buffer, prefetch)
    result = {"epochs": figures, "bound": bound}
    if json_out:
        Path(json_out).write_text(json.dumps(result, indent=1))
    return result


def _print(r: dict[str, float], cfg: dict, cold: bool) -> None:
    per = cfg["per_sample"]
    where = "page cache evicted before each row" if cold else "page cache warm"
    print(
        f"\n{cfg['n']} samples of {'x'.join(map(str, cfg['dims']))} float16 "
        f"({per / 1024:.0f} KiB), batch {cfg['batch']}, {cfg['workers']} workers, "
        f"{os.cpu_count()} CPUs, source {cfg['source']} ({cfg['origin']}), {where}"
    )
    print(f"{'row':<24}{'samples/s':>12}{'GB/s':>8}")
    for name, rate in r.items():
        print(f"{name:<24}{rate:>12,.0f}{rate * per / 1e9:>8.2f}")
    print("ratios:")
    print(f"  loffdata / raw read          {r['loffdata'] / r['raw read']:.2f}   (target >= 0.6)")
    if cfg["source"] != "local":
        one = r["raw read " + cfg["source"]]
        print(f"  loffdata / raw read {cfg['source']:<8} {r['loffdata'] / one:.2f}")
    print(f"  loffdata / webdataset        {r['loffdata'] / r['webdataset']:.2f}   (target >= 2.5)")
    if "loffdata, later epochs" in r:
        warm = r["loffdata, later epochs"]
        print(f"  later epochs / raw read      {warm / r['raw read']:.2f}   (target >= 0.6)")
        print(f"  later epochs / webdataset    {warm / r['webdataset']:.2f}   (target >= 2.5)")
    _print_identity_and_first_epoch(r)
    _print_augment(r, cfg["augment"])


def _print_augment(r: dict[str, float], aug: str) -> None:
    if not aug or aug == "none":
        return
    alone = r[f"{aug} alone"]
    print(f"  loffdata+{aug} / {aug} alone  {r[f'loffdata + {aug}'] / alone:.2f}   (target >= 0.7)")
    if f"loffdata + {aug}, later" in r:
        later = r[f"loffdata + {aug}, later"] / alone
        print(f"  later epochs, {aug} / alone  {later:.2f}   (target >= 0.7)")


@functools.wraps(main)  # fire reads main's options (and --help) through __wrapped__
def cli(*args, **kwargs) -> None:
    """Command-line entry point (fire); see :func:`main` for the options."""
    main(*args, **kwargs)


if __name__ == "__main__":
    fire.Fire(cli)
