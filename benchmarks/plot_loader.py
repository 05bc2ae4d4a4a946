"""Loader throughput against batch size and worker count, plotted (two panels).

Reads the same shards from the page cache (written once under ``--root`` and reused), no
augmentation, float16 out. Each point is one persistent ``LoffLoader`` after an untimed
first epoch (what a training run sees from its second epoch on), the median of ``repeats``
epochs; the raw sequential read of the tar files, measured before each point, is drawn as
the ceiling (its median).

Usage::

    python benchmarks/plot_loader.py                    # 8192 x 768x16x16 ->
    docs/img/loader_throughput.png
    python benchmarks/plot_loader.py --quick --out /tmp/t.png
"""

from __future__ import annotations

import functools
import statistics
import time
from pathlib import Path

import fire
import torch
from bench_loader import WarmLoader, build_data, parse_shape, raw_read
from machine import machine

OUT = Path(__file__).resolve().parents[1] / "docs" / "img" / "loader_throughput.png"


def rate(fn) -> float:
    t0 = time.perf_counter()
    return fn() / (time.perf_counter() - t0)


def sweep(
    root: str, points: list[tuple[int, int]], repeats: int, urls: list[str], per_sample: float
) -> dict:
    """samples/s per (batch, workers) point (warm loader, median of ``repeats`` epochs) and
    for the raw read (median over the points)."""
    rates: dict = {"raw": []}
    for b, w in points:
        rates["raw"].append(rate(lambda: raw_read(urls) / per_sample))
        warm = WarmLoader(root, b, w, None, torch.float16)
        rates[(b, w)] = statistics.median(rate(warm) for _ in range(repeats))
        warm.loader.close()
    rates["raw"] = statistics.median(rates["raw"])
    return rates


def plot(
    r: dict, batches: list[int], workers: list[int], fixed: tuple[int, int], title: str, out: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    panels = [
        (axes[0], batches, lambda b: (b, fixed[1]), f"batch size ({fixed[1]} workers)"),
        (axes[1], workers, lambda w: (fixed[0], w), f"DataLoader workers (batch {fixed[0]})"),
    ]
    for ax, xs, key, label in panels:
        ax.plot(xs, [r[key(x)] for x in xs], "o-", label="LoffLoader")
        ax.axhline(r["raw"], color="grey", ls="--", label="raw sequential read")
        ax.set_xlabel(label)
        ax.set_xticks(xs)
        ax.grid(alpha=0.3)
    axes[0].set_xscale("log", base=2)
    axes[0].set_xticks(batches, [str(b) for b in batches])
    axes[0].set_ylabel("samples/s")
    axes[0].set_ylim(bottom=0)
    axes[0].legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def main(
    n: int = 8192,
    shape: str = "768,16,16",
    batches: tuple = (16, 64, 256),
    workers: tuple = (0, 1, 2, 4),
    batch: int = 64,
    fixed_workers: int = 2,
    repeats: int = 3,
    root: str = "/tmp/loffdata-bench",
    out: str = str(OUT),
    quick: bool = False,
) -> dict:
    """Measures every point, prints them and writes the two-panel plot to ``out``."""
    if quick:
        n, shape, batches, workers, batch, repeats = 128, "32,8,8", (8, 32), (0, 2), 16, 1
    dims = parse_shape(shape)
    path = Path(root) / f"{n}x{'x'.join(map(str, dims))}"
    manifest = build_data(path, n, dims, 256 if not quick else 32)
    urls, per_sample = manifest.shard_urls(str(path)), manifest.num_bytes / n
    raw_read(urls)  # warm the page cache
    points = sorted({(b, fixed_workers) for b in batches} | {(batch, w) for w in workers})
    r = sweep(str(path), points, repeats, urls, per_sample)
    for k, v in r.items():
        print(
            f"{'raw read' if k == 'raw' else f'batch {k[0]:>4}, workers {k[1]}':<24}{v:>10,.0f} "
            "samples/s"
        )
    title = (
        f"LoffLoader (warm, later epochs), {n} x {'x'.join(map(str, dims))} float16 from page "
        "cache, "
        f"no augmentation (medians of {repeats})\n{machine()}"
    )
    plot(r, list(batches), list(workers), (batch, fixed_workers), title, Path(out))
    print(f"wrote {out}")
    return r


@functools.wraps(main)  # fire reads main's options (and --help) through __wrapped__
def cli(*args, **kwargs) -> None:
    """Command-line entry point (fire); see :func:`main` for the options."""
    main(*args, **kwargs)


if __name__ == "__main__":
    fire.Fire(cli)
