"""Plan-driven prefetch against the loopback cloud simulator: depth, budget, faults, resume."""

import multiprocessing as mp
import os
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from loffdata.errors import ShardReadError
from loffdata.storage.pinned import ObjectChanged, Pin, Version, get_range
from loffdata.storage.prefetch.by_shard import (
    PrefetchConfig,
    Prefetcher,
    ShardRead,
    bytes_needed,
    read_order,
)
from loffdata.storage.retry import RetryConfig
from loffdata.storage.shardfile import filesystem
from loffdata.stream.dataset import StreamingDataset
from tests.resume_helpers import assert_resumes_exactly
from tests.servers import http_server, s3_server, write_shards  # noqa: F401

SHAPE = (64, 8, 8)  # 8 KiB of float16 a sample
BLOCK = 16 << 10


def flat(items):
    return [
        i
        for b in items
        for i in (b["index"].tolist() if torch.is_tensor(b["index"]) else [b["index"]])
    ]


@pytest.fixture
def big(http_server):  # noqa: F811
    """40 samples in 2 shards of ~170 KiB (11 blocks of 16 KiB each) behind the server."""
    write_shards(Path(http_server.root), 40, 20, shape=SHAPE)
    return http_server


def settled(pf, hang: float = 120.0) -> None:
    """Waits until nothing is in flight, then schedules once more (what every completed
    request does): from then on no request starts unless the test reads or plans. A state,
    not a pause; ``hang`` only bounds a broken prefetcher."""
    end = time.monotonic() + hang
    while (pf.requests == 0 or pf.in_flight) and time.monotonic() < end:
        time.sleep(0.01)
    pf._pump()  # the decision a completion makes, made here after the last completion
    while pf.in_flight and time.monotonic() < end:  # (a broken budget: what it launched)
        time.sleep(0.01)


def retry(**kw):
    return RetryConfig(**({"attempts": 4, "backoff": 0.01, "block_size": BLOCK} | kw))


def test_read_order_follows_the_windows_of_the_plan():
    idx = np.array([12, 13, 14, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 17, 18])
    assert read_order([5, 5, 5, 5], idx, 6) == [(1, 5), (2, 5), (0, 5), (3, 4)]
    assert bytes_needed(1000, 10, 10, 64) == 1000 and bytes_needed(1000, 10, 3, 64) == 364


#: the two ways of prefetching: whole shards in blocks, or the indexed samples' byte ranges
MODES = {"shards": {"by_sample": False}, "samples": {"by_sample": True}}


def prefetch(mode: str, requests: int) -> PrefetchConfig:
    return PrefetchConfig(requests=requests, sample_requests=max(1, requests), **MODES[mode])


@pytest.mark.parametrize("mode", MODES)
def test_requests_in_flight_reach_the_configured_depth(big, mode):
    big.faults.gather = 6  # no answer before 6 requests are in flight at once
    ds = StreamingDataset(big.url, seed=0, batch_size=8, retry=retry(), prefetch=prefetch(mode, 6))
    big.reset_peak()
    assert sorted(flat(ds)) == list(range(40))
    assert big.faults.gather == 0  # the gate opened: the prefetcher overlapped 6 requests
    assert 6 <= big.reset_peak() <= 7  # the depth (+1: a block the reader wanted first)


def test_without_prefetch_one_request_at_a_time(big):
    big.latency = 0.05
    ds = StreamingDataset(
        big.url, seed=0, batch_size=8, retry=retry(), prefetch=PrefetchConfig(requests=0)
    )
    big.reset_peak()
    assert sorted(flat(ds)) == list(range(40))
    assert big.reset_peak() <= 2  # the block read plus one read ahead


def test_prefetch_stays_within_its_byte_budget(big):
    big.latency = 0.05
    fs, _ = filesystem(big.url, None, retry())
    shards = sorted(Path(big.root).glob("*.tar"))
    reads = [
        ShardRead(
            f"{big.url}/{p.name}", fs, f"{big.url}/{p.name}", p.stat().st_size, p.stat().st_size
        )
        for p in shards
    ]
    pf = Prefetcher(PrefetchConfig(requests=8, budget_bytes=3 * BLOCK), retry())
    pf.plan(reads)  # nobody reads: the prefetcher must stop at the budget
    settled(pf)
    assert pf.held <= 3 * BLOCK and pf.requests == 3 and pf.in_flight == 0
    f = pf.open(reads[0])
    assert f.read() == shards[0].read_bytes()  # reading frees budget: the rest follows
    assert pf.requests >= -(-reads[0].size // BLOCK)
    f.close()
    pf.close()
    assert pf.held == 0


@pytest.mark.parametrize("mode", MODES)
def test_dropped_connection_and_503_burst_with_prefetch(big, mode):
    big.faults.drop_after["shard-000001.tar"] = 50_000
    big.faults.statuses["shard-000000.tar"] = [503] * 6
    ds = StreamingDataset(big.url, seed=3, batch_size=8, retry=retry(), prefetch=prefetch(mode, 8))
    assert Counter(flat(DataLoader(ds, batch_size=None, num_workers=2))) == Counter(range(40))
    assert (
        "shard-000001.tar" not in big.faults.drop_after
        and not big.faults.statuses["shard-000000.tar"]
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("requests", [0, 8])
def test_a_stall_is_retried_and_a_dead_server_fails_in_time(big, requests, mode):
    quick, pf = retry(timeout=0.5, deadline=3.0, attempts=20), prefetch(mode, requests)
    big.faults.stall["shard-000000.tar"] = [60.0]  # one request hangs; its retry answers
    ds = StreamingDataset(big.url, seed=0, batch_size=8, retry=quick, prefetch=pf)
    assert sorted(flat(ds)) == list(range(40))
    big.faults.stall["shard-000001.tar"] = [60.0] * 500  # stops answering
    with pytest.raises(
        ShardReadError, match=f"{big.url}/shard-000001.tar.*after .* attempts"
    ) as err:
        list(StreamingDataset(big.url, seed=0, batch_size=8, retry=quick, prefetch=pf))
    tries = int(re.search(r"after (\d+) attempts", str(err.value))[1])
    assert tries < quick.attempts  # the deadline gave up, not the 20 attempts (of 0.5 s each)


def test_default_deadline_is_well_under_a_minute():
    r = RetryConfig()
    assert r.deadline is not None and r.deadline + r.timeout < 60


@pytest.mark.parametrize(("requests", "batch"), [(0, None), (8, None), (8, 4)])
def test_object_replaced_mid_read_fails_naming_the_url(big, tmp_path, requests, batch):
    other = write_shards(tmp_path / "v2", 40, 20, shape=SHAPE, offset=100)
    new = other / "shard-000001.tar"
    assert new.stat().st_size == (Path(big.root) / "shard-000001.tar").stat().st_size  # same size
    big.faults.replace["shard-000001.tar"] = (2, str(new))  # a new version before the 2nd GET
    ds = StreamingDataset(
        big.url,
        shuffle=False,
        batch_size=batch,
        retry=retry(),
        prefetch=prefetch("samples", requests),
    )  # batches: by sample
    # sequentially the second block meets the new version; with requests in flight, the new
    # version may answer first, and the index then refuses its first sample (another key)
    expected = ObjectChanged if requests == 0 else ShardReadError
    with pytest.raises(
        expected,
        match=f"shard '{big.url}/shard-000001.tar'( changed while|: sample|: the sample at)",
    ):
        list(ds)


def test_pin_refuses_another_version():
    pin = Pin("u")
    pin.check(Version(10, '"a"', None))
    pin.check(Version(10, None, "Mon"))  # a server not telling is no change
    with pytest.raises(ObjectChanged, match="'u' changed.*etag"):
        pin.check(Version(10, '"b"', None))
    with pytest.raises(ObjectChanged, match="size 10 -> 11"):
        pin.check(Version(11, '"a"', None))


@pytest.mark.parametrize("mode", MODES)
def test_resume_mid_prefetch_is_exact(big, mode):
    big.latency = 0.02

    def make():
        ds = StreamingDataset(
            big.url,
            seed=5,
            batch_size=4,
            shuffle_buffer=8,
            retry=retry(),
            prefetch=prefetch(mode, 4),
        )
        return ds

    assert_resumes_exactly(make, [1, 4, 7])


def _epoch_with_cache(url: str, cache_dir: str, queue) -> None:
    ds = StreamingDataset(url, shuffle=False, batch_size=8, cache_dir=cache_dir, retry=retry())
    queue.put(sorted(flat(ds)))


def test_processes_sharing_a_cache_download_each_shard_once(big, tmp_path):
    big.latency = 0.05  # the two processes overlap
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_epoch_with_cache, args=(big.url, str(tmp_path / "c"), queue))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    got = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert got == [list(range(40))] * 2
    for p in sorted(Path(big.root).glob("*.tar")):
        ranges = big.gets(p.name)
        assert ranges and Counter(ranges).most_common(1)[0][1] == 1  # no byte range fetched twice
    assert len(list((tmp_path / "c").glob("*.tar"))) == 2


def test_second_epoch_from_the_cache_reads_nothing_remote(big, tmp_path):
    ds = StreamingDataset(big.url, seed=0, batch_size=8, cache_dir=tmp_path / "c", retry=retry())
    assert sorted(flat(ds)) == list(range(40))
    before = len(big.requests)
    ds.set_epoch(1)
    assert sorted(flat(ds)) == list(range(40)) and len(big.requests) == before
    assert os.listdir(tmp_path / "c")


def test_s3_object_replaced_between_ranges_is_refused(s3_server, tmp_path):  # noqa: F811
    fs = s3_server.filesystem()
    if not fs.exists("pins"):
        fs.mkdir("pins")
    fs.pipe_file("pins/obj.bin", b"a" * 4096)
    s3, _ = filesystem("s3://pins/obj.bin", s3_server.storage_options, retry())
    pin = Pin("s3://pins/obj.bin")
    assert get_range(s3, "pins/obj.bin", 0, 1024, pin) == b"a" * 1024 and pin.etag
    fs.pipe_file("pins/obj.bin", b"b" * 4096)  # same size, new version
    with pytest.raises(ObjectChanged, match="'s3://pins/obj.bin' changed while being read"):
        get_range(s3, "pins/obj.bin", 1024, 2048, pin)


def test_a_failed_block_fetch_never_leaves_an_unretrieved_task_exception():
    """The coroutine each block runs returns its error (the reader raises it); a released
    block whose task failed therefore leaves no "Task exception was never retrieved"."""
    import asyncio

    from loffdata.storage.prefetch.by_shard import Failed, Prefetcher, _Entry

    p = Prefetcher(PrefetchConfig(requests=1), retry())
    changed = ObjectChanged("shard 'u' changed while being read")

    async def failing(e, start, end):
        raise changed

    p._fetch = failing
    got = asyncio.run(p._guarded(_Entry(read=None, pin=Pin("u")), 0, 10))
    assert isinstance(got, Failed) and got.error is changed


class _Pieces:
    """A stand-in prefetcher whose blocks arrive in pieces, as HTTP bodies do."""

    def __init__(self, data: bytes, block: int, piece: int):
        self.data, self.block, self.piece, self.taken = data, block, piece, []

    def take(self, e, start):
        a = start - start % self.block
        self.taken.append(a)
        blk = self.data[a : a + self.block]
        return a, [blk[i : i + self.piece] for i in range(0, len(blk), self.piece)]

    def forget(self, url):
        pass


def test_a_prefetched_file_reads_across_the_pieces_of_its_blocks():
    """Blocks are handed over in the pieces they arrived in (never joined); reads and seeks
    across pieces and blocks give the file's bytes, one take per block."""
    from loffdata.storage.prefetch.by_shard import PrefetchedFile, _Entry

    data = bytes(range(256)) * 40  # 10,240 bytes: blocks of 1,000 in pieces of 300
    src = _Pieces(data, 1000, 300)
    f = PrefetchedFile(src, _Entry(ShardRead("u", None, "u", len(data), len(data)), Pin("u")))
    assert f.read(250) == data[:250] and f.read(100) == data[250:350]  # across a piece
    buf = bytearray(1500)
    assert f.readinto(buf) == 1500 and bytes(buf) == data[350:1850]  # across pieces and blocks
    assert src.taken == [0, 1000]
    f.seek(9990)
    assert f.read(300) == data[9990:] and f.read(1) == b""  # the last block is short
    f.seek(1299)
    assert f.read(2) == data[1299:1301] and src.taken == [0, 1000, 9000, 10_000, 1000]
