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
    assert pooled._buffers.flags is not None  # the private path pools buffers

    monkeypatch.delattr(torch._C, "_storage_Use_Count")
    assert not compat.can_count_storage_uses() and compat.storage_use_count(torch.zeros(1)) is None
    fresh = LoffLoader(str(root), **kwargs)
    got = _batches(fresh) + _batches(fresh)
    assert (
        fresh._buffers.flags is None and not fresh._buffers.leases
    )  # nothing pooled, nothing leased
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


def test_new_shared_storage_on_both_paths(monkeypatch):
    private = compat.new_shared_storage(64)
    monkeypatch.setattr(torch.UntypedStorage, "_new_shared", None)
    fallback = compat.new_shared_storage(64)
    for storage in (private, fallback):
        assert storage.nbytes() == 64 and storage.is_shared()


def test_strip_protocol_on_both_paths(monkeypatch):
    fs = fsspec.filesystem("memory")
    fs.pipe("/bucket/a.tar", b"tar")
    paths = [compat.strip_protocol(fs, "memory://bucket/a.tar")]
    with monkeypatch.context() as patch:
        patch.setattr(type(fs), "_strip_protocol", None)
        paths.append(compat.strip_protocol(fs, "memory://bucket/a.tar"))
        assert compat.strip_protocol(fs, "https://h/a.tar") == "https://h/a.tar"
    assert [fs.cat(p) for p in paths] == [b"tar", b"tar"] and paths[0] == "/bucket/a.tar"


def test_worker_processes_on_both_paths():
    it = iter(DataLoader(list(range(4)), num_workers=1))
    try:
        assert len(compat.worker_processes(it)) == 1
    finally:
        compat.shutdown_workers(it)
    assert compat.worker_processes(object()) == []
