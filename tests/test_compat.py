"""loffdata.compat: each private torch/fsspec use, on its private path and on its fallback."""

import multiprocessing

import fsspec
import torch
from torch.utils.data import DataLoader

from loffdata import compat
from loffdata.loader import LoffLoader


def test_use_count_counts_views():
    t = torch.zeros(8)
    base = compat.storage_use_count(t)
    view = t[2:]
    assert compat.can_count_storage_uses()
    assert compat.storage_use_count(t) == base + 1
    del view
    assert compat.storage_use_count(t) == base


def _batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def test_without_use_count_every_batch_is_fresh_and_right(make_dataset, monkeypatch):
    root, _ = make_dataset(n=24, shard_size=8)
    kwargs = dict(batch_size=4, num_workers=0, augment=None, seed=1)
    pooled = LoffLoader(str(root), **kwargs)
    expected = _batches(pooled) + _batches(pooled)
    assert pooled._flags is not None  # the private path pools buffers

    monkeypatch.delattr(torch._C, "_storage_Use_Count")
    assert not compat.can_count_storage_uses() and compat.storage_use_count(torch.zeros(1)) is None
    fresh = LoffLoader(str(root), **kwargs)
    got = _batches(fresh) + _batches(fresh)
    assert fresh._flags is None and not fresh._leases  # nothing pooled, nothing leased
    assert all(
        torch.equal(a, c) and torch.equal(b, d)
        for (a, b), (c, d) in zip(expected, got, strict=True)
    )


def _worker_pids(before):
    return {p.pid for p in multiprocessing.active_children()} - before


def test_shutdown_workers_stops_them_now():
    before = {p.pid for p in multiprocessing.active_children()}
    it = iter(DataLoader(list(range(8)), batch_size=2, num_workers=2))
    next(it)
    assert len(_worker_pids(before)) == 2
    assert compat.shutdown_workers(it) is True
    assert not _worker_pids(before)


def test_shutdown_without_workers_is_a_no_op():
    it = iter(DataLoader(list(range(4)), batch_size=2, num_workers=0))
    assert compat.shutdown_workers(it) is False
    assert [b.tolist() for b in it] == [[0, 1], [2, 3]]


def test_cached_filesystems_from_fsspecs_cache():
    fs = fsspec.filesystem("memory")
    assert any(f is fs for f in compat.cached_filesystems())


def test_cached_filesystems_fallback_holds_registered_ones():
    fs = fsspec.filesystem("memory", skip_instance_cache=True)  # not in fsspec's cache
    assert not any(f is fs for f in compat.cached_filesystems())
    assert compat.register_filesystem(fs) is fs
    assert any(f is fs for f in compat.cached_filesystems())
