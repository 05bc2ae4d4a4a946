"""Very large caches: what a process holds for the index grows with shards, not samples."""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from loffdata.format.manifest import Manifest
from loffdata.format.writer import WriterConfig, write_dataset
from loffdata.stream import indexes, order
from loffdata.stream.dataset import StreamingDataset
from loffdata.stream.plan import epoch_sequence, global_order
from tests.servers import http_origin, http_server  # noqa: F401

PER_SHARD, SHARDS = 250, 4000  # 1 M samples


@pytest.fixture(scope="module")
def million(tmp_path_factory):
    """1 M samples: 4,000 hardlinks of one 250-sample shard (and of its sidecar), one manifest."""
    base, root = tmp_path_factory.mktemp("base"), tmp_path_factory.mktemp("million")
    samples = ((f"s{i:06d}", np.full((4, 2, 2), i, np.float16), i % 3) for i in range(PER_SHARD))
    m = write_dataset(
        str(base), samples, config=WriterConfig(max_samples=PER_SHARD), classes=["a", "b", "c"]
    )
    info, infos = m.shards[0], []
    for s in range(SHARDS):
        name = f"shard-{s:06d}.tar"
        os.link(base / info.name, root / name)
        os.link(base / info.index_file, root / name.replace(".tar", ".idx"))
        infos.append(dataclasses.replace(info, name=name, index_file=name.replace(".tar", ".idx")))
    Manifest(shards=infos, features=m.features, classes=m.classes).save(str(root))
    return root


def test_the_manifest_and_what_a_worker_receives_grow_with_shards_only(million):
    assert (million / "manifest.json").stat().st_size < 300 * SHARDS  # about 250 bytes a shard
    ds = StreamingDataset(million, batch_size=64, seed=0)
    assert ds.shards.num_samples == PER_SHARD * SHARDS
    sent = len(pickle.dumps(ds))  # what a spawned DataLoader worker gets
    assert (
        sent < 2 * PER_SHARD * SHARDS
    )  # < 2 bytes a sample: no per-sample data (an index is >= 16)


def test_the_index_bytes_a_reader_holds_stay_bounded(million, monkeypatch):
    monkeypatch.setattr(indexes, "MAX_LOADED", 4)
    ds = StreamingDataset(million, batch_size=64, seed=0, shuffle_buffer=64 * PER_SHARD)
    it, seen = iter(ds), set()
    for _ in range(40):
        b = next(it)
        assert (b["features"][:, 0, 0, 0].numpy() == (b["index"].numpy() % PER_SHARD)).all()
        seen |= set((b["index"].numpy() // PER_SHARD).tolist())
    held = ds.shards.index
    assert len(seen) > 4 and len(held._loaded) <= 4  # more shards read than indexes held
    one = 16 * (PER_SHARD + 1) + 7 * PER_SHARD  # offsets, key starts and keys of one shard
    assert held.held_bytes <= 4 * one


def order_bytes(order) -> int:
    """Bytes of the arrays a lazy order holds (its O(shards) tables and the windows kept)."""
    arrays = [v for v in vars(order).values() if isinstance(v, np.ndarray)]
    return sum(a.nbytes for a in arrays) + sum(p.nbytes for p in order._perms.values())


def test_a_workers_plan_and_order_stay_o_shards(million):
    ds = StreamingDataset(million, batch_size=64, seed=3, shuffle_buffer=1024)
    n = ds.shards.num_samples
    plan = ds.worker_plan(0, 2)  # what worker 0 of 2 computes before its first batch
    held = len(pickle.dumps(plan))  # our own object, measured; nothing is unpickled
    assert held < 48 * SHARDS + 24 * n // 64, held  # the worker's half would be 4 MB
    first = plan.indices[:64]
    assert order_bytes(plan.indices.order) < 24 * SHARDS + 8 * 4 * 1024  # + a few windows
    eager = global_order(epoch_sequence(ds.shards.counts, seed=3, epoch=0), ds.config, 0)
    assert first.tolist() == eager[:64].tolist()
    batches = -(-n // 64)  # worker 0 of 2 has the even ones, the last included
    assert len(plan.indices) == 64 * (-(-batches // 2))
    assert plan.indices[-64:].tolist() == eager[-64:].tolist()


def test_a_remote_worker_draws_the_windows_it_reads_not_the_epochs(
    million,
    http_server,  # noqa: F811
    monkeypatch,
):
    """By sample over HTTP, the first batch of 1 M samples computes the windows planned so
    far (two ahead), not the whole epoch's order (977 windows: ~1 s a worker at 10 M)."""
    www = Path(http_server.root)
    for p in million.iterdir():
        os.link(p, www / p.name)
    drawn = []
    real = order.window_permutation

    def counted(length: int, **key: int) -> np.ndarray:
        drawn.append(key["start"])
        return real(length, **key)

    monkeypatch.setattr(order, "window_permutation", counted)
    ds = StreamingDataset(http_server.url, batch_size=64, seed=0, shuffle_buffer=1024)
    first = next(iter(ds))
    assert len(first["index"]) == 64 and ds.shards.num_samples // 1024 > 900
    assert len(set(drawn)) <= 8, len(set(drawn))
