"""Peak resident memory over epochs (``bench_loader.py --memory``): an RSS sampler of this
process and its children, the figures per epoch, and the bound the batch pool sets."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

import torch
from loader_common import consume

from loffdata.stream.batching import pool_slots
from loffdata.stream.plan import window_size

__all__ = ["RssSampler", "memory_bound", "memory_epochs", "print_memory"]


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
    from loffdata.loader.loaderconfig import LoaderConfig

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


def print_memory(
    epochs: list[dict], bound: dict, cfg: dict, shuffle_buffer: int, prefetch: int
) -> None:
    mib = 1 << 20
    print(
        f"\nmemory: {cfg['n']} samples of {'x'.join(map(str, cfg['dims']))} float16, "
        f"batch {cfg['batch']}, {cfg['workers']} workers, shuffle_buffer {shuffle_buffer}, "
        f"prefetch {prefetch}, {os.cpu_count()} CPUs"
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
        f"{bound['per worker'] / mib:,.0f} MiB per worker, "
        f"{bound['main'] / mib:,.0f} MiB mapped in the main process"
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
