"""Prefetch by sample: byte ranges of planned samples, coalesced, many in flight (loopback HTTP)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from loffdata.format.manifest import Manifest
from loffdata.format.shardindex import read_index
from loffdata.storage.prefetch.by_sample import (
    GAP_BYTES,
    TAIL_BYTES,
    RangePrefetcher,
    RangeRead,
    sample_ranges,
)
from loffdata.storage.prefetch.by_shard import PrefetchConfig, ShardRead
from loffdata.storage.retry import RetryConfig
from loffdata.storage.shardfile import filesystem
from loffdata.stream.dataset import StreamingDataset
from tests.servers import http_server, write_shards  # noqa: F401
from tests.storage.prefetch.test_by_shard import settled

SHAPE = (64, 8, 8)  # 8 KiB of float16 a sample


@pytest.fixture
def big(http_server):  # noqa: F811
    """40 samples in 2 indexed shards of 20 behind the server."""
    write_shards(Path(http_server.root), 40, 20, shape=SHAPE)
    return http_server


def _offsets(root: str) -> list[np.ndarray]:
    m = Manifest.load(str(Path(root) / "manifest.json"))
    return [
        read_index(
            str(Path(root) / s.index_file), samples=s.samples, shard_bytes=s.bytes, sha256=s.sha256
        ).offsets.astype(np.int64)
        for s in m.shards
    ]


def _gets(server) -> list[int]:
    """Sizes of the ranged GETs of shards the server was asked for so far."""
    sizes = []
    for method, name, rng in server.requests:
        if method == "GET" and name.endswith(".tar") and rng:
            a, b = rng.removeprefix("bytes=").split("-")
            sizes.append(int(b) - int(a) + 1)
    return sizes


def test_ranges_follow_the_groups_and_coalesce_neighbours_within_the_horizon():
    offsets = [
        np.arange(0, 11_000, 1000),
        np.arange(0, 11_000, 1000),
    ]  # 2 shards of 10 samples, 1000 B each
    counts, order = [10, 10], np.array([3, 2, 15, 9, 4, 0])  # groups of 3: (3, 2, 15), (9, 4, 0)
    got = sample_ranges(counts, offsets, order, 3, block_size=1 << 20)
    # horizon 0: within a group only. Group 1: samples 2-3 of shard 0 in one range, then
    # sample 5 of shard 1; group 2 (0, 4, 9): gaps of ~3000 B are under GAP_BYTES: one range
    assert GAP_BYTES > 5000 and got == [
        (0, 2000, 4000 + TAIL_BYTES, None),
        (1, 5000, 6000 + TAIL_BYTES, None),
        (0, 0, 10_000 + TAIL_BYTES, None),
    ]
    # horizon 1: neighbours 2, 3 (group 1) and 4 (group 2) share a range, kept until position
    # 6, the end of group 2 (None: released when taken); across a gap, only samples of one
    # group share a range (a gap may hold another process's samples): 0 and 9 of group 2
    got = sample_ranges(counts, offsets, order, 3, block_size=1 << 20, horizon=1)
    assert got == [
        (0, 2000, 5000 + TAIL_BYTES, 6),
        (1, 5000, 6000 + TAIL_BYTES, None),
        (0, 0, 10_000 + TAIL_BYTES, None),
    ]
    capped = sample_ranges(counts, offsets, np.arange(10), 10, block_size=2500)
    assert all(b - a <= 2500 for _, a, b, _ in capped)
    assert capped[0][:3] == (0, 0, 1000 + TAIL_BYTES)
    far = [np.arange(0, 11 << 20, 1 << 20)]  # 1 MiB samples: neighbours 2 apart are 1 MiB apart
    assert len(sample_ranges([10], far, np.array([0, 2, 4]), 3, block_size=8 << 20)) == 3
    # 1 MiB samples in groups of 2: (5, 4), (1, 0), (6, 3): with horizon 1, 4-5 and 0-1 share
    # a range each; 3 and 6 (group 2) are 2 groups from 4-5: ranges of their own, in first-use
    # order
    got = sample_ranges([10], far, np.array([5, 4, 1, 0, 6, 3]), 2, block_size=8 << 20, horizon=1)
    assert [(a >> 20, b >> 20, until) for _, a, b, until in got] == [
        (4, 6, None),
        (0, 2, None),
        (3, 4, None),
        (6, 7, None),
    ]


def test_range_prefetcher_keeps_its_depth_within_the_budget(big):
    big.faults.gather = 5  # no answer before 5 requests are in flight at once
    fs, _ = filesystem(big.url, None, RetryConfig())
    shard = Path(big.root) / "shard-000000.tar"
    url = f"{big.url}/{shard.name}"
    read = ShardRead(url, fs, url, shard.stat().st_size, shard.stat().st_size)
    o = _offsets(big.root)[0]
    jobs = [RangeRead(read, int(o[i]), int(o[i + 1])) for i in range(20)]
    pf = RangePrefetcher(PrefetchConfig(sample_requests=5, budget_bytes=int(o[8])), RetryConfig())
    big.reset_peak()
    pf.plan_ranges(iter(jobs))
    settled(pf)
    # the gate opened (5 at once at the server), and the client never had more than 5 in flight
    # (the server's own count may lag a response it already sent, so it bounds from below)
    assert big.faults.gather == 0 and big.reset_peak() >= 5 and pf.peak_in_flight == 5
    assert pf.held <= int(o[8]) and pf.requests <= 8  # then the budget
    f = pf.open(read)
    data = shard.read_bytes()
    for i in (0, 1, 5):  # planned samples, whole, from their blocks
        f.seek(int(o[i]))
        assert f.read(int(o[i + 1] - o[i])) == data[o[i] : o[i + 1]]
    before = pf.requests
    f.seek(100)  # inside a block already taken: fetched again, on demand
    assert f.read(10) == data[100:110] and pf.requests >= before + 1
    f.seek(int(o[19]) + 7)  # any byte, planned or not
    assert f.read(64) == data[o[19] + 7 : o[19] + 71]
    f.close()
    pf.close()
    assert pf.held == 0


def _first_batch_bytes(server, by_sample: bool) -> int:
    ds = StreamingDataset(
        server.url,
        seed=0,
        batch_size=8,
        shuffle_buffer=40,
        prefetch=PrefetchConfig(
            by_sample=by_sample, requests=2, sample_requests=4, budget_bytes=64 << 10
        ),
        retry=RetryConfig(block_size=16 << 10),
    )
    before = sum(_gets(server))
    it = iter(ds)
    first = next(it)
    got = sum(_gets(server)) - before
    rest = [first, *it]
    assert sorted(torch.cat([b["index"] for b in rest]).tolist()) == list(range(40))
    return got


def test_by_sample_the_first_batch_waits_for_its_samples_not_its_window(big):
    total = sum(p.stat().st_size for p in Path(big.root).glob("*.tar"))
    assert _first_batch_bytes(big, by_sample=False) >= 0.9 * total  # the window is all 40 samples
    assert _first_batch_bytes(big, by_sample=True) < 0.5 * total  # 8 samples, and the budget ahead


def _epoch(server, by_sample: bool, workers: int = 0) -> list[tuple[int, float]]:
    ds = StreamingDataset(
        server.url,
        seed=4,
        batch_size=6,
        shuffle_buffer=16,
        retry=RetryConfig(block_size=32 << 10),
        prefetch=PrefetchConfig(by_sample=by_sample, sample_requests=3),
    )
    loader = DataLoader(ds, batch_size=None, num_workers=workers)
    return [
        (int(i), float(f.flatten()[0])) for b in loader for i, f in zip(b["index"], b["features"])
    ]


def test_by_sample_every_window_delivers_what_reading_by_shard_does(big):
    by_shard = _epoch(big, False)
    before = len(_gets(big))
    by_sample = _epoch(big, True)
    assert by_sample == by_shard and sorted(i for i, _ in by_sample) == list(range(40))
    assert all(i == v for i, v in by_sample)  # sample i's features are all i (tests/servers.py)
    span = int(np.diff(_offsets(big.root)[0]).max())
    sizes = _gets(big)[before:]
    # every window by sample (3 windows of <= 18 samples), no whole-shard block at all
    assert sizes and all(n <= 3 * span + TAIL_BYTES for n in sizes) and (32 << 10) not in sizes


@pytest.mark.parametrize("by_sample", [False, True])
def test_two_workers_fetch_the_shards_once_by_sample_twice_by_shard(big, by_sample):
    """Each worker reads every other batch of a window: by sample it fetches only its own
    samples' bytes, by shard each worker streams every shard of the window."""
    total = sum(p.stat().st_size for p in Path(big.root).glob("*.tar"))
    before = sum(_gets(big))
    assert sorted(i for i, _ in _epoch(big, by_sample, workers=2)) == list(range(40))
    fetched = (sum(_gets(big)) - before) / total
    assert fetched >= 1.6 if not by_sample else fetched <= 1.25


def test_start_up_is_one_get_for_the_manifest_and_one_round_trip_for_the_sidecars(
    http_server,  # noqa: F811
):
    """Before the first batch: the manifest in one GET, every sidecar of the first window's
    shards in flight at once (the gate holds them until all 6 are), then sample ranges."""
    write_shards(Path(http_server.root), 30, 5, shape=SHAPE)  # 6 shards
    faults = http_server.faults
    faults.gather, faults.gate_suffix, faults.gather_timeout = 6, ".idx", 5.0
    ds = StreamingDataset(http_server.url, seed=0, batch_size=4, shuffle_buffer=30)
    first = next(iter(ds))
    assert faults.gate_met and len(first["index"]) == 4  # 6 sidecar GETs were in flight at once
    seen = [(m, n.rsplit(".", 1)[-1]) for m, n, _ in http_server.requests]
    assert ("HEAD", "json") not in seen and seen[0] == ("GET", "json")
    kinds = [k for _, k in seen]
    assert kinds[1:7] == ["idx"] * 6 and set(kinds[7:]) == {"tar"} and ("HEAD", "idx") not in seen


def _epoch_gets(server, workers: int, budget: int = 256 << 20) -> tuple[list, list[int]]:
    """One epoch by sample: ``(index, first feature value)`` of every sample delivered, and
    the sizes of the shard GETs it made."""
    ds = StreamingDataset(
        server.url,
        seed=4,
        batch_size=4,
        shuffle_buffer=40,
        prefetch=PrefetchConfig(budget_bytes=budget),
    )
    before = len(_gets(server))
    got = [
        (int(i), float(f.flatten()[0]))
        for b in DataLoader(ds, batch_size=None, num_workers=workers)
        for i, f in zip(b["index"], b["features"])
    ]
    return got, _gets(server)[before:]


@pytest.fixture
def wide(http_server):  # noqa: F811
    """40 samples of 128 KiB (more than ``GAP_BYTES``: only neighbours share a request) in 2
    indexed shards of 20 behind the server."""
    write_shards(Path(http_server.root), 40, 20, shape=(64, 32, 32))
    return http_server


def test_a_workers_neighbouring_samples_in_different_batches_share_a_request(wide):
    """Two workers each read every other batch of one 40-sample window: about half of a
    worker's samples have a shard neighbour among its own, mostly in another of its
    batches; one request fetches both. Sharing requests within a batch only, this epoch
    took 36 requests; every byte is still fetched once, and only by the worker reading it."""
    got, sizes = _epoch_gets(wide, workers=2)
    assert sorted(i for i, _ in got) == list(range(40)) and all(i == v for i, v in got)
    total = sum(p.stat().st_size for p in Path(wide.root).glob("*.tar"))
    assert len(sizes) <= 30 and sum(sizes) <= total


def test_samples_kept_for_later_batches_stay_within_the_budget(wide):
    """One reader owns every sample of its window, so all its neighbours could share
    requests: ranges read by several batches are kept until their last one, and only
    batches close enough to keep within half the budget share a request. Nothing is
    fetched twice (a budget starved by kept bytes would fetch planned ranges again, on
    demand, one round trip each)."""
    span = int(np.diff(_offsets(wide.root)[0]).max())
    got, sizes = _epoch_gets(wide, workers=0, budget=24 * span)  # batches 2 apart may share
    assert sorted(i for i, _ in got) == list(range(40)) and all(i == v for i, v in got)
    total = sum(p.stat().st_size for p in Path(wide.root).glob("*.tar"))
    # 36 requests within batches only; 17, and 2.6x the bytes, were the horizon not bounded
    assert len(sizes) <= 26 and sum(sizes) <= total


def test_a_range_read_by_several_batches_is_kept_until_the_last_one(big):
    fs, _ = filesystem(big.url, None, RetryConfig())
    shard = Path(big.root) / "shard-000000.tar"
    url = f"{big.url}/{shard.name}"
    read = ShardRead(url, fs, url, shard.stat().st_size, shard.stat().st_size)
    o = _offsets(big.root)[0]
    pf = RangePrefetcher(PrefetchConfig(), RetryConfig())
    pf.plan_ranges([RangeRead(read, int(o[0]), int(o[2]), until=8)])  # samples 0 and 1
    settled(pf)
    e, data = pf._entries[url], shard.read_bytes()
    for i in (0, 1):  # each taken by its own batch: the same block, one request
        start, pieces = pf.take(e, int(o[i]))
        assert b"".join(pieces)[o[i] - start : o[i + 1] - start] == data[o[i] : o[i + 1]]
    assert pf.requests == 1 and pf.held == o[2] - o[0]
    pf.release(7)  # the reader is not past the last batch that reads it yet
    assert pf.held == o[2] - o[0]
    pf.release(8)
    assert pf.held == 0 and not e.blocks
    pf.close()
