"""A 1 M-sample manifest: what a worker holds for the index and the order stays O(shards)."""

from __future__ import annotations

import pickle

import numpy as np

from loffdata.format.manifest import Manifest, ShardInfo, TensorSpec
from loffdata.stream.dataset import StreamingDataset
from loffdata.stream.plan import epoch_sequence, global_order

SHARDS, PER_SHARD = 4_000, 250  # 1 M samples


def large(root) -> StreamingDataset:
    """A dataset of 1 M samples whose manifest lists 4,000 sidecar-indexed shards (the shards
    are not there: nothing here reads one)."""
    shards = [
        ShardInfo(
            f"shard-{i:06d}.tar", PER_SHARD, 1 << 20, "0" * 64, index_file=f"shard-{i:06d}.idx"
        )
        for i in range(SHARDS)
    ]
    Manifest(shards=shards, features=TensorSpec((8, 2, 2), "float16", "CHW")).save(str(root))
    return StreamingDataset(str(root), batch_size=64, seed=3, shuffle_buffer=1024)


def order_bytes(order) -> int:
    """Bytes of the arrays a lazy order holds (its O(shards) tables and the windows kept)."""
    arrays = [v for v in vars(order).values() if isinstance(v, np.ndarray)]
    return sum(a.nbytes for a in arrays) + sum(p.nbytes for p in order._perms.values())


def test_what_a_worker_receives_and_plans_is_o_shards(tmp_path):
    ds = large(tmp_path)
    n = ds.shards.num_samples
    assert n == SHARDS * PER_SHARD
    received = len(pickle.dumps(ds))  # our own object, measured; nothing is unpickled
    plan = ds.worker_plan(0, 2)  # what worker 0 of 2 computes before its first batch
    held = len(pickle.dumps(plan))
    # 8 bytes a sample would be 8 MB for the order, 4 MB for the worker's half of it
    assert received < 400 * SHARDS, received  # names, sizes, sha256s: O(shards)
    assert held < 48 * SHARDS + 24 * n // 64, held
    first = plan.indices[:64]
    order = plan.indices.order
    assert order_bytes(order) < 24 * SHARDS + 8 * 4 * 1024  # O(shards) + a few windows
    eager = global_order(epoch_sequence(ds.shards.counts, seed=3, epoch=0), ds.config, 0)
    assert first.tolist() == eager[:64].tolist()
    batches = -(-n // 64)  # worker 0 of 2 has the even ones, the last included
    assert len(plan.indices) == 64 * (-(-batches // 2))
    assert plan.indices[-64:].tolist() == eager[-64:].tolist()
