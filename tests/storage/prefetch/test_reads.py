"""What a reader asks of remote prefetch: a by-sample plan, a step at a time."""

from pathlib import Path

import numpy as np
import pytest

from loffdata.format.manifest import Manifest
from loffdata.storage.prefetch.by_shard import PrefetchConfig
from loffdata.storage.prefetch.reads import RemoteReads
from loffdata.storage.retry import RetryConfig
from loffdata.storage.shardfile import filesystem
from tests.servers import http_server, write_shards  # noqa: F401
from tests.storage.prefetch.test_by_sample import SHAPE, _offsets
from tests.storage.prefetch.test_by_shard import settled


class _Sliced:
    """A plan's indices that may be sliced (a worker's lazy plan) but never taken whole."""

    def __init__(self, indices: np.ndarray):
        self.indices, self.sliced = indices, []

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: slice) -> np.ndarray:
        assert isinstance(item, slice) and item.stop is not None, "only bounded slices"
        self.sliced.append((item.start or 0, item.stop))
        return self.indices[item]

    def __array__(self, *args, **kwargs):
        pytest.fail("the whole plan was materialised")


def _reads(server, budget: int = 256 << 20) -> RemoteReads:
    m = Manifest.load(server.url)
    urls = [f"{server.url}/{s.name}" for s in m.shards]
    reads = RemoteReads(
        urls,
        [s.samples for s in m.shards],
        [s.bytes for s in m.shards],
        retry=RetryConfig(),
        config=PrefetchConfig(budget_bytes=budget),
        filesystem=lambda url: filesystem(url, None, RetryConfig()),
        offsets=_offsets(server.root),
    )
    reads.sampled = True
    return reads


def test_a_by_sample_plan_is_read_a_step_at_a_time_never_whole(http_server):  # noqa: F811
    """A worker's plan of a 10 M-sample cache would be 5 M indices: the plan slices the first
    batch, then one step (a window's batches) at a time, up to two steps ahead."""
    write_shards(Path(http_server.root), 40, 10, shape=SHAPE)
    indices = _Sliced(np.random.default_rng(0).permutation(40))
    reads = _reads(http_server)
    reads.plan(indices, 8, batch=4, first=8)
    # the two steps' shards (their sidecars in one round trip), then the ranges of the first
    # batch, of the rest of its step, and of the next step
    assert indices.sliced == [(0, 16), (0, 4), (4, 8), (8, 16)]
    reads.reached(4)  # the first batch is read: the next step is planned, two steps ahead
    assert indices.sliced[-1] == (16, 24)
    reads.reached(4)  # still 16 samples planned ahead: nothing more
    assert indices.sliced[-1] == (16, 24)
    reads.reached(4)
    assert indices.sliced[-1] == (24, 32)
    settled(reads.prefetcher)
    reads.close()


def test_the_horizon_keeps_the_bytes_kept_for_later_batches_within_half_the_budget(
    http_server,  # noqa: F811
):
    write_shards(Path(http_server.root), 40, 10, shape=SHAPE)
    per_sample = sum(p.stat().st_size for p in Path(http_server.root).glob("*.tar")) / 40
    for batches in (0, 1, 5):
        budget = int(2 * 4 * per_sample * batches) + 8
        assert _reads(http_server, budget)._horizon(4) == batches
