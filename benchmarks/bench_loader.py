"""Loader throughput, measured side by side in one run and printed as ratios.

Rows (same shards, page cache warm, medians of ``repeats`` interleaved runs):

- raw read: sequential ``read()`` of the tar files in one process (the ceiling),
- webdataset: stock ``webdataset`` + msgpack decode + ``.batched()`` in a DataLoader,
- loffdata: :class:`~loffdata.loader.LoffLoader` without augmentation,
- augment alone: the augmentation on batches already in memory,
- loffdata + augment: the loader with that augmentation.

Usage::

    python benchmarks/bench_loader.py                       # 2048 x 768x16x16 fp16, batch 64, 2 workers
    python benchmarks/bench_loader.py --shape 1024,32,32    # high-resolution features
    python benchmarks/bench_loader.py --quick               # tiny smoke run (CI)
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import fire
import numpy as np
import torch

from loffdata import codec
from loffdata.manifest import Manifest
from loffdata.writer import WriterConfig, write_dataset


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
    return write_dataset(str(root), items, config=WriterConfig(max_samples=shard_samples, dtype=None))


def raw_read(urls: list[str]) -> int:
    """Reads every file sequentially in 1 MiB chunks; returns bytes read."""
    total = 0
    for url in urls:
        with open(url, "rb", buffering=0) as f:
            while chunk := f.read(1 << 20):
                total += len(chunk)
    return total


def webdataset_epoch(urls: list[str], batch: int, workers: int) -> int:
    """Stock webdataset: decode msgpack to tensors, batch, DataLoader workers; returns samples."""
    import webdataset as wds

    def decode(sample: dict) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(codec.decode(sample["feat.msgpack"]).copy()), int(sample["cls"])

    ds = wds.WebDataset(urls, shardshuffle=False, empty_check=False).map(decode).batched(batch)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers)
    return sum(consume(x) for x, _ in loader)


def consume(x: torch.Tensor) -> int:
    """What any training step does at least: touch every page of the batch once."""
    x.reshape(-1)[:: 4096 // x.element_size()].float().sum()
    return len(x)


def loffdata_epoch(root: str, batch: int, workers: int, augment: str | None, dtype: torch.dtype) -> int:
    from loffdata.loader import LoffLoader

    loader = LoffLoader(root, batch_size=batch, num_workers=workers, augment=augment, dtype=dtype, backend="torch")
    return sum(consume(x) for x, _ in loader)


def augment_alone(n: int, shape: tuple[int, ...], batch: int, augment: str, dtype: torch.dtype, mean, std) -> int:
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


def median_rate(fn: Callable[[], int], repeats: int) -> tuple[float, int]:
    rates, units = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        units = fn()
        rates.append(units / (time.perf_counter() - t0))
    return statistics.median(rates), units


def main(n: int = 8192, shape: str = "768,16,16", batch: int = 64, workers: int = 2, shard_samples: int = 256,
         repeats: int = 3, augment: str = "loffta", root: str = "/tmp/loffdata-bench", quick: bool = False,
         json_out: str | None = None) -> dict:
    """Runs every row and prints the table; returns the figures."""
    if quick:
        n, shape, batch, shard_samples, repeats = 128, "32,8,8", 16, 32, 1
    dims = tuple(int(s) for s in str(shape).split(","))
    path = Path(root) / f"{n}x{'x'.join(map(str, dims))}"
    manifest = build_data(path, n, dims, shard_samples)
    urls = manifest.shard_urls(str(path))
    per_sample = manifest.num_bytes / n
    raw_read(urls)  # warm the page cache
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    rows: dict[str, float] = {}
    mean, std = manifest.stats.mean.tolist(), manifest.stats.std.tolist()
    for _ in range(repeats):  # interleave the rows so that machine noise hits all alike
        rows.setdefault("raw read", [])
        rows["raw read"].append(median_rate(lambda: raw_read(urls) / per_sample, 1)[0])
        rows.setdefault("webdataset", []).append(median_rate(lambda: webdataset_epoch(urls, batch, workers), 1)[0])
        rows.setdefault("loffdata", []).append(median_rate(lambda: loffdata_epoch(str(path), batch, workers, None, torch.float16), 1)[0])
        if augment:
            rows.setdefault(f"{augment} alone", []).append(
                median_rate(lambda: augment_alone(n, dims, batch, augment, torch.float32, mean, std), 1)[0])
            rows.setdefault(f"loffdata + {augment}", []).append(
                median_rate(lambda: loffdata_epoch(str(path), batch, workers, augment, torch.float32), 1)[0])
    result = {k: statistics.median(v) for k, v in rows.items()}
    _print(result, per_sample, dims, n, batch, workers, augment)
    if json_out:
        Path(json_out).write_text(json.dumps({"config": {"n": n, "shape": dims, "batch": batch, "workers": workers}, "samples_per_s": result}, indent=1))
    return result


def _print(r: dict[str, float], per_sample: float, dims, n, batch, workers, augment) -> None:
    print(f"\n{n} samples of {'x'.join(map(str, dims))} float16 ({per_sample / 1024:.0f} KiB), batch {batch}, {workers} workers, {os.cpu_count()} CPUs")
    print(f"{'row':<24}{'samples/s':>12}{'GB/s':>8}")
    for name, rate in r.items():
        print(f"{name:<24}{rate:>12,.0f}{rate * per_sample / 1e9:>8.2f}")
    print("ratios:")
    print(f"  loffdata / raw read          {r['loffdata'] / r['raw read']:.2f}   (target >= 0.6)")
    print(f"  loffdata / webdataset        {r['loffdata'] / r['webdataset']:.2f}   (target >= 2.5)")
    if augment:
        print(f"  loffdata+{augment} / {augment} alone  {r[f'loffdata + {augment}'] / r[f'{augment} alone']:.2f}   (target >= 0.7)")


def cli(**kwargs) -> None:
    """Command-line entry point (fire); see :func:`main` for the options."""
    main(**kwargs)


if __name__ == "__main__":
    fire.Fire(cli)
