"""Fixed costs of very large caches: manifest size, load, loader start-up, first batch, RSS.

Builds caches of N samples from hardlinked copies of one shard (distinct names, no extra
disk, seconds) with one manifest listing them all, then measures, each size in a fresh
process (so imports and page faults are counted as a user would see them):

- manifest bytes, and the bytes of the index sidecars if any (hardlinks: on disk once),
- the import of ``loffdata`` (and its loader), then ``Manifest.load`` alone,
- ``LoffLoader(...)`` construction, the first batch, and the steady rate of the next batches,
- peak RSS (``VmHWM``) of the main process plus that of each DataLoader worker.

A projection to 100 M samples extends each figure's least-squares slope over the measured
sizes. ``plot`` draws peak RSS and start-up (construction + first batch) against samples
from two ``--out`` files (before and after).

Usage::

    python benchmarks/bench_scale.py                        # 10 k, 1 M, 10 M samples
    python benchmarks/bench_scale.py --sizes 10000,1000000  # lighter on RAM
    python benchmarks/bench_scale.py --quick                # smoke run (CI)
    python benchmarks/bench_scale.py --out after.json       # also the rows as JSON
    python benchmarks/bench_scale.py plot before.json after.json --out docs/img/scale.png
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
    from loffdata.loader import LoffLoader

    t_import = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    Manifest.load(root)
    t_load, c_load = time.perf_counter() - t0, time.process_time() - c0

    t1, c1 = time.perf_counter(), time.process_time()
    loader = LoffLoader(
        root, batch_size=batch, augment=None, device="cpu", num_workers=workers, seed=0
    )
    t_make, c_make = time.perf_counter() - t1, time.process_time() - c1
    t2 = time.perf_counter()
    it = iter(loader)
    next(it)
    t_first = time.perf_counter() - t2
    rate, worker_hwm = _steady(it, steady)
    rss = _hwm_kb(os.getpid()) + sum(worker_hwm.values())
    del it
    print(
        json.dumps(
            {
                "import_s": t_import,
                "load_s": t_load,
                "load_cpu_s": c_load,
                "make_cpu_s": c_make,
                "make_s": t_make,
                "first_s": t_first,
                "rate": rate,
                "rss_mb": rss / 1024,
                "workers_seen": len(worker_hwm),
            }
        )
    )


def _steady(it: object, steady: int) -> tuple[float, dict[int, int]]:
    """Samples/s over the next ``steady`` batches, and each worker's peak RSS (kB)."""
    worker_hwm: dict[int, int] = {}
    t0, n = time.perf_counter(), 0
    for _ in range(steady):
        features, _ = next(it)
        n += len(features)
        for pid in _children(os.getpid()):
            worker_hwm[pid] = max(worker_hwm.get(pid, 0), _hwm_kb(pid))
    return n / (time.perf_counter() - t0), worker_hwm


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


_HEADER = (
    "| samples | manifest | index sidecars (hardlinked) | `Manifest.load` (CPU) "
    "| `LoffLoader(...)` (CPU) "
    "| first batch | start-up (construction + first batch) | peak RSS main + workers "
    "| steady samples/s |\n|---|---|---|---|---|---|---|---|---|"
)


def _row(label: str, r: dict) -> str:
    rate = f"{r['rate']:,.0f}" if "rate" in r else "-"
    cpu = {k: f" ({r[k + '_cpu_s']:.2f})" if k + "_cpu_s" in r else "" for k in ("load", "make")}
    return (
        f"| {label} | {r['manifest_mb']:.2f} MB | {r['index_mb']:.1f} MB "
        f"| {r['load_s']:.2f} s{cpu['load']} | {r['make_s']:.2f} s{cpu['make']} "
        f"| {r['first_s']:.2f} s | {r['make_s'] + r['first_s']:.2f} s "
        f"| {r['rss_mb'] / 1024:.2f} GB | {rate} |"
    )


def projection(rows: list[tuple[int, dict]], target: int = 100_000_000) -> dict:
    """Each figure at ``target`` samples from its least-squares slope over the measured sizes
    (a slope that noise makes negative is taken as flat: the largest size's figure)."""
    n = np.array([float(k) for k, _ in rows])
    est = {}
    keys = ("manifest_mb", "index_mb", "load_s", "make_s", "first_s", "rss_mb")
    for key in keys + tuple(k for k in ("load_cpu_s", "make_cpu_s") if k in rows[-1][1]):
        y = np.array([r[key] for _, r in rows])
        slope = max(0.0, float(np.polyfit(n, y, 1)[0]))
        est[key] = float(y[-1] + slope * (target - n[-1]))
    return est


def print_table(rows: list[tuple[int, dict]]) -> None:
    """The local rows and the 100 M projection, as a markdown table."""
    print(_HEADER)
    for n, r in rows:
        print(_row(f"{n:,}", r))
    if len(rows) >= 2:
        print(_row("100 M (projected)", projection(rows)))


def _ints(value: object) -> tuple[int, ...]:
    """``"1,2"``, ``(1, 2)`` (as fire parses it) or ``1`` -> ``(1, 2)`` / ``(1,)``."""
    if isinstance(value, (tuple, list)):
        return tuple(int(x) for x in value)
    return tuple(int(x) for x in str(value).split(","))


def local_rows(work: Path, sizes: tuple[int, ...], per_shard: int, dims: tuple, **how) -> list:
    """``(samples, figures)`` of each size: a local cache built and measured, then removed."""
    base = work / "base"
    manifest = _base_shard(base, per_shard, dims)
    rows = []
    for n in sizes:
        root = work / f"n{n}"
        build(root, base, manifest, max(1, n // per_shard))
        r = _measure(root, how["batch"], how["workers"], how["steady"])
        rows.append(finish_row(root, n, r))
    return rows


def finish_row(root: Path, n: int, r: dict, where: str = "") -> tuple[int, dict]:
    """Adds the cache's manifest and index sizes to ``r``, removes the cache, logs the row."""
    r["manifest_mb"] = (root / "manifest.json").stat().st_size / 1e6
    r["index_mb"] = _dir_bytes(root, ".idx") / 1e6
    shutil.rmtree(root)
    print(f"measured {n:,} samples{where}: {json.dumps(r)}", file=sys.stderr, flush=True)
    return n, r


def main(
    sizes: str = "10000,1000000,10000000",
    per_shard: int = 250,
    shape: str = "768,16,16",
    batch: int = 64,
    workers: int = 2,
    steady: int = 40,
    quick: bool = False,
    tmp: str | None = None,
    out: str | None = None,
) -> None:
    """Builds each cache, measures it in a fresh process, prints the table (markdown);
    ``out``: also writes the rows as JSON (for :func:`plot`)."""
    if quick:
        sizes, per_shard, shape, steady = "1000,4000", 50, "8,4,4", 5
    dims = _ints(shape)
    work = Path(tempfile.mkdtemp(prefix="bench-scale-", dir=tmp))
    try:
        rows = local_rows(
            work, _ints(sizes), per_shard, dims, batch=batch, workers=workers, steady=steady
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"shape {dims} float16, {per_shard} samples a shard, batch {batch}, {workers} workers\n")
    print_table(rows)
    if out:
        Path(out).write_text(json.dumps(rows, indent=1))


def plot(before: str, after: str, out: str = "docs/img/scale.png") -> None:
    """Peak RSS and start-up time (construction + first batch) against samples, before and
    after, from two ``--out`` files (needs matplotlib: the ``show`` extra, in ``dev``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rss, start) = plt.subplots(1, 2, figsize=(9, 3.4))
    for label, path, style in (("before", before, "o--"), ("after", after, "s-")):
        rows = json.loads(Path(path).read_text())
        n = [k for k, _ in rows]
        rss.plot(n, [r["rss_mb"] / 1024 for _, r in rows], style, label=label)
        start.plot(n, [r["make_s"] + r["first_s"] for _, r in rows], style, label=label)
    for ax, what in ((rss, "peak RSS, main + 2 workers (GB)"), (start, "start-up (s)")):
        ax.set_xscale("log")
        ax.set_xlabel("samples")
        ax.set_ylabel(what)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend()
    start.set_title("construction + first batch", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("child", "plot"):
        fire.Fire({"child": child, "plot": plot}[sys.argv[1]], command=sys.argv[2:])
    else:
        fire.Fire(main)
