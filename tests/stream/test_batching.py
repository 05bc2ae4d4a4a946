"""The pooled batch buffers: a SharedArena made before the fork, and the pool that uses it."""

from __future__ import annotations

import mmap
import os

import numpy as np
import torch

from loffdata.compat import storage_use_count
from loffdata.stream.batching import BufferPool, SharedArena
from loffdata.stream.dataset import StreamingDataset


def _shards(make_dataset):
    root, _ = make_dataset(n=20, shard_size=10, extras=True, classes=4)
    return StreamingDataset(str(root), batch_size=4).shards


def test_arena_slots_are_disjoint_page_aligned_storages_of_their_own(make_dataset):
    shards = _shards(make_dataset)
    arena = SharedArena(shards, batch_size=4, dtype=None, workers=2, slots=3)
    slots = [arena.tensors(w, s) for w in range(2) for s in range(3)]
    assert set(slots[0]) >= {"features", "label", "index"} | set(shards.extras)
    ranges = []
    for tensors in slots:
        assert tensors["features"].shape == (4, *shards.features.shape)
        for t in tensors.values():
            assert t.data_ptr() % mmap.PAGESIZE == 0  # each can be page-locked on its own
            assert storage_use_count(t) == storage_use_count(
                torch.empty(1)
            )  # nothing else holds it
            ranges.append((t.data_ptr(), t.data_ptr() + t.untyped_storage().nbytes()))
    ranges.sort()
    assert all(a[1] <= b[0] for a, b in zip(ranges, ranges[1:]))  # no two tensors overlap


def test_arena_written_in_a_forked_child_is_seen_by_the_parent(make_dataset):
    arena = SharedArena(_shards(make_dataset), batch_size=4, dtype=None, workers=1, slots=2)
    mine = arena.tensors(0, 1)  # as the loader holds it from before the fork
    pid = os.fork()
    if pid == 0:  # a worker: its own tensors over the inherited mapping
        theirs = arena.tensors(0, 1)
        theirs["label"].copy_(torch.arange(4) + 7)
        theirs["features"].fill_(3)
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    assert mine["label"].tolist() == [7, 8, 9, 10]
    assert bool((mine["features"] == 3).all())
    assert not arena.tensors(0, 0)["label"].any()  # the other slot is untouched


def test_pool_sends_arena_slots_by_reference_from_the_first_batch(make_dataset):
    shards = _shards(make_dataset)
    arena = SharedArena(shards, batch_size=4, dtype=None, workers=1, slots=2)
    flags = torch.zeros(1, 2, dtype=torch.int32)
    pool = BufferPool(
        shards, batch_size=4, shared=True, flags=flags, worker=0, by_reference=True, arena=arena
    )
    buf = pool.get(4)
    assert (
        buf.tensors["features"].data_ptr() == arena.tensors(0, buf.slot[1])["features"].data_ptr()
    )
    sent = pool.hand_out(buf)
    assert sent["ref"] and sent["slot"] == (0, 0) and flags[0, 0] == 1
    partial = pool.hand_out(pool.get(3))  # a short batch is fresh: sent whole
    assert "ref" not in partial and partial["features"].shape[0] == 3
    plain = BufferPool(
        shards, batch_size=4, shared=True, flags=flags.clone(), worker=0, by_reference=True
    )
    assert "ref" not in plain.hand_out(plain.get(4))  # without an arena: sent whole once
    assert np.array_equal(flags.numpy(), [[1, 0]])
