"""The writer thread: per-image results -> one tar shard + JSON sidecar per planned shard.

A shard is complete once its sidecar (``<prefix>-<j>.json``, written after the tar commits)
exists; the sidecar carries the shard's statistics, skipped inputs and the sha256 of the
model weights that produced it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loffdata.errors import LoffError
from loffdata.extract.extractconfig import ExtractConfig
from loffdata.extract.images import ImageRecord
from loffdata.extract.jsonio import write_json
from loffdata.format.writer import ShardWriter, WriterConfig, shard_name

__all__ = ["ShardSink", "SplitJob", "sidecar_name"]


@dataclass
class SplitJob:
    """What the writer thread needs to know about one split."""

    split: str
    url: str
    records: list[ImageRecord]
    plan: dict[int, range]
    config: ExtractConfig
    on_shard: Callable[[str, int], None] | None = None
    weights: str = ""  # sha256 of the model weights, recorded in every sidecar


class ShardSink:
    """Writer thread: gathers per-image results by shard and writes each shard when complete.

    Results may arrive in any order (several WebDataset workers); a shard is written once
    all of its images have arrived (features or a skip record), sorted by index.
    """

    def __init__(self, job: SplitJob, fs: Any, root: str):
        self.job, self.fs, self.root = job, fs, root
        self.owner = {i: j for j, r in job.plan.items() for i in r}
        self.buffers: dict[int, dict[int, Any]] = {}
        self.queue: queue.Queue = queue.Queue(maxsize=4)
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self.thread = threading.Thread(
            target=self._run, name=f"loffdata-writer-{job.split}", daemon=True
        )
        self.thread.start()

    def put(self, items: list[tuple[int, Any]]) -> None:
        """Queues ``(index, (features, pooled) | skip reason str)`` items; raises writer errors."""
        while True:
            self.check()
            try:
                self.queue.put(items, timeout=0.2)
                return
            except queue.Full:
                continue

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Waits for everything queued to be written; raises writer errors."""
        self.put([])
        self._stop.set()
        self.thread.join()
        self.check()
        if self.buffers:
            raise LoffError(
                f"split {self.job.split!r}: shards {sorted(self.buffers)} never received all their "
                "images"
            )

    def abort(self) -> None:
        self._stop.set()
        self.thread.join(timeout=60)

    def _run(self) -> None:
        try:
            while True:
                try:
                    items = self.queue.get(timeout=0.2)
                except queue.Empty:
                    if self._stop.is_set():
                        return
                    continue
                self._add(items)
        except BaseException as err:  # surfaced in the main thread by check()
            self.error = err

    def _add(self, items: list[tuple[int, Any]]) -> None:
        for i, value in items:
            j = self.owner[i]
            buf = self.buffers.setdefault(j, {})
            buf[i] = value
            if len(buf) == len(self.job.plan[j]):
                self._write_shard(j, self.buffers.pop(j))
                if self.job.on_shard is not None:
                    self.job.on_shard(self.job.split, j)

    def _write_shard(self, j: int, results: dict[int, Any]) -> None:
        cfg = self.job.config
        wcfg = WriterConfig(
            prefix=cfg.prefix,
            max_samples=len(results) + 1,
            max_bytes=1 << 62,
            dtype=cfg.dtype,
            start_index=j,
        )
        skipped = []
        with ShardWriter(self.job.url, wcfg, **cfg.fs_options()) as writer:
            for i in sorted(results):
                rec, value = self.job.records[i], results[i]
                if isinstance(value, str):
                    skipped.append({"path": rec.path, "reason": value})
                    continue
                feat, vec, more = value
                extras = {**({} if vec is None else {"pooled": vec}), **(more or {})}
                writer.write(rec.key, feat, label=rec.label, extras=extras or None)
        write_json(
            self.fs,
            f"{self.root}/{sidecar_name(cfg.prefix, j)}",
            _sidecar(j, writer, skipped, self.job.weights),
        )


def sidecar_name(prefix: str, j: int) -> str:
    return shard_name(prefix, j)[: -len(".tar")] + ".json"


def _sidecar(
    j: int, writer: ShardWriter, skipped: list[dict[str, str]], weights: str
) -> dict[str, Any]:
    return {"index": j, **writer.record(), "skipped": skipped, "weights_sha256": weights}
