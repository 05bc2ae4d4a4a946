"""Fixed costs of very large caches: manifest size, load, loader start-up, first batch, RSS.

Builds caches of N samples from hardlinked copies of one shard (distinct names, no extra
disk, seconds) with one manifest listing them all, then measures, each size in a fresh
process (so imports and page faults are counted as a user would see them):

- manifest bytes, and the bytes of the index sidecars if any (hardlinks: on disk once),
- ``Manifest.load`` (including ``import loffdata``, about 1 s here),
- ``LoffLoader(...)`` construction, the first batch, and the steady rate of the next batches,
- peak RSS (``VmHWM``) of the main process plus that of each DataLoader worker.

A projection to 100 M samples extends the slope between the two largest measured sizes.

Usage::

    python benchmarks/bench_scale.py                        # 10 k, 1 M, 10 M samples
    python benchmarks/bench_scale.py --sizes 10000,1000000  # lighter on RAM
    python benchmarks/bench_scale.py --quick                # smoke run (CI)
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fire
import numpy as np

_SELF = Path(__file__).resolve()


def _base_shard(root: Path, per_shard: int, shape: tuple[int, ...]) -> object:
    """Writes one shard of ``per_shard`` samples; returns its manifest."""
    from loffdata.format.writer import WriterConfig, write_dataset

    rng = np.random.default_rng(0)
    feats = rng.standard_normal((per_shard, *shape)).astype(np.float16)
    samples = ((f"s{i:08d}", feats[i], i % 10) for i in range(per_shard))
    cfg = WriterConfig(max_samples=per_shard, dtype="float16")
    return write_dataset(str(root), samples, config=cfg, classes=[str(c) for c in range(10)])


def _sidecar_of(info: object) -> str | None:
    return getattr(info, "index_file", None)


def build(root: Path, base: Path, manifest: object, shards: int) -> None:
    """A cache of ``shards`` hardlinked copies of the base shard (and of its index sidecar)."""
    from loffdata.format.manifest import Manifest

    info = manifest.shards[0]
    root.mkdir(parents=True, exist_ok=True)
    infos = []
    for i in range(shards):
        name = f"shard-{i:06d}.tar"
        os.link(base / info.name, root / name)
        fields = {"name": name}
        if _sidecar_of(info):
            fields["index_file"] = f"shard-{i:06d}.idx"
            os.link(base / _sidecar_of(info), root / fields["index_file"])
        infos.append(dataclasses.replace(info, **fields))
    Manifest(
        shards=infos, features=manifest.features, classes=manifest.classes, stats=manifest.stats
    ).save(str(root))


def _hwm_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def child(root: str, batch: int = 64, workers: int = 2, steady: int = 40) -> None:
    """One measurement in this process (started fresh by :func:`main`); prints JSON."""
    t0 = time.perf_counter()
    from loffdata.format.manifest import Manifest

    Manifest.load(root)
    t_load = time.perf_counter() - t0
    from loffdata.loader import LoffLoader

    t1 = time.perf_counter()
    loader = LoffLoader(
        root, batch_size=batch, augment=None, device="cpu", num_workers=workers, seed=0
    )
    t_make = time.perf_counter() - t1
    t2 = time.perf_counter()
    it = iter(loader)
    next(it)
    t_first = time.perf_counter() - t2
    worker_hwm: dict[int, int] = {}
    t3, n = time.perf_counter(), 0
    for _ in range(steady):
        features, _ = next(it)
        n += len(features)
        for pid in _children(os.getpid()):
            worker_hwm[pid] = max(worker_hwm.get(pid, 0), _hwm_kb(pid))
    rate = n / (time.perf_counter() - t3)
    rss = _hwm_kb(os.getpid()) + sum(worker_hwm.values())
    del it
    print(
        json.dumps(
            {
                "load_s": t_load,
                "make_s": t_make,
                "first_s": t_first,
                "rate": rate,
                "rss_mb": rss / 1024,
                "workers_seen": len(worker_hwm),
            }
        )
    )


def _measure(root: Path, batch: int, workers: int, steady: int) -> dict:
    cmd = [
        sys.executable,
        str(_SELF),
        "child",
        str(root),
        f"--batch={batch}",
        f"--workers={workers}",
        f"--steady={steady}",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"measurement failed: {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _dir_bytes(root: Path, suffix: str) -> int:
    return sum(p.stat().st_size for p in root.glob(f"*{suffix}"))


def _row(label: str, r: dict) -> str:
    return (
        f"| {label} | {r['manifest_mb']:.2f} MB | {r['index_mb']:.1f} MB | {r['load_s']:.2f} s | "
        f"{r['make_s']:.2f} s | {r['first_s']:.2f} s | {r['rss_mb'] / 1024:.2f} GB | {r['rate']:,.0f} |"
    )


def _projection(rows: list[tuple[int, dict]], target: int = 100_000_000) -> str:
    (n1, a), (n2, b) = rows[-2], rows[-1]
    est = {
        k: b[k] + (b[k] - a[k]) / (n2 - n1) * (target - n2)
        for k in ("manifest_mb", "index_mb", "load_s", "make_s", "first_s", "rss_mb")
    }
    return (
        f"| 100 M (projected) | {est['manifest_mb']:.1f} MB | {est['index_mb']:.0f} MB | {est['load_s']:.2f} s | "
        f"{est['make_s']:.2f} s | {est['first_s']:.2f} s | {est['rss_mb'] / 1024:.2f} GB | - |"
    )


def _ints(value: object) -> tuple[int, ...]:
    """``"1,2"``, ``(1, 2)`` (as fire parses it) or ``1`` -> ``(1, 2)`` / ``(1,)``."""
    if isinstance(value, (tuple, list)):
        return tuple(int(x) for x in value)
    return tuple(int(x) for x in str(value).split(","))


def main(
    sizes: str = "10000,1000000,10000000",
    per_shard: int = 250,
    shape: str = "768,16,16",
    batch: int = 64,
    workers: int = 2,
    steady: int = 40,
    quick: bool = False,
    tmp: str | None = None,
) -> None:
    """Builds each cache, measures it in a fresh process, prints the table (markdown)."""
    if quick:
        sizes, per_shard, shape, steady = "1000,4000", 50, "8,4,4", 5
    dims = _ints(shape)
    work = Path(tempfile.mkdtemp(prefix="bench-scale-", dir=tmp))
    try:
        base = work / "base"
        manifest = _base_shard(base, per_shard, dims)
        rows = []
        for n in _ints(sizes):
            root = work / f"n{n}"
            build(root, base, manifest, max(1, n // per_shard))
            r = _measure(root, batch, workers, steady)
            r["manifest_mb"] = (root / "manifest.json").stat().st_size / 1e6
            r["index_mb"] = _dir_bytes(root, ".idx") / 1e6
            rows.append((n, r))
            shutil.rmtree(root)
            print(f"measured {n:,} samples: {json.dumps(r)}", file=sys.stderr, flush=True)
        print(
            f"shape {dims} float16, {per_shard} samples a shard, batch {batch}, {workers} workers\n"
        )
        print(
            "| samples | manifest | index sidecars (hardlinked) | `Manifest.load` | `LoffLoader(...)` "
            "| first batch | peak RSS main + workers | steady samples/s |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for n, r in rows:
            print(_row(f"{n:,}", r))
        if len(rows) >= 2:
            print(_projection(rows))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        fire.Fire(child, command=sys.argv[2:])
    else:
        fire.Fire(main)
