"""Remote shards over loopback HTTP and S3 (moto), with injected network faults."""

from collections import Counter
from pathlib import Path

import fsspec
import pytest
import torch
from torch.utils.data import DataLoader

from loffdata.errors import ManifestError, SampleError, ShardReadError
from loffdata.storage.retry import RetryConfig, is_transient, with_retries
from loffdata.storage.shardfile import ResumableReader
from loffdata.stream.dataset import StreamingDataset
from tests.servers import http_server, s3_server, write_shards  # noqa: F401
from tests.stream.test_dataset_faults import corrupt_member, truncate

FAST = RetryConfig(attempts=4, backoff=0.01, block_size=2048)


class CountingRetry(RetryConfig):
    """A patient retry policy that records each backoff it is asked for: "not retried" is
    then a state (no backoff asked), not a wall-clock bound."""

    def delay(self, failures: int) -> float:
        BACKOFFS.append(failures)
        return super().delay(failures)


BACKOFFS: list[int] = []


@pytest.fixture
def slow_retry():
    """A policy that would wait seconds between tries; ``BACKOFFS`` lists the waits it gave."""
    BACKOFFS.clear()
    return CountingRetry(attempts=5, backoff=2.0)


def flat_indices(items):
    out = []
    for x in items:
        out += x["index"].tolist() if torch.is_tensor(x["index"]) else [x["index"]]
    return out


@pytest.fixture
def served(http_server):  # noqa: F811
    """20 samples in 4 shards of 5 (about 12 KiB each) behind the HTTP server."""
    write_shards(Path(http_server.root), 20, 5)
    return http_server


# -- HTTP -----------------------------------------------------------------------------------


def test_http_epoch_matches_local(served):
    remote = StreamingDataset(served.url, seed=4, shuffle_buffer=6, retry=FAST)
    local = StreamingDataset(served.root, seed=4, shuffle_buffer=6)
    a, b = list(remote), list(local)
    assert [x["index"] for x in a] == [x["index"] for x in b] and sorted(
        x["index"] for x in a
    ) == list(range(20))
    assert all((x["features"] == y["features"]).all() for x, y in zip(a, b))
    assert all(r is not None and r.startswith("bytes=") for r in served.gets("shard-000000.tar"))


def test_http_brace_pattern_and_dataloader_workers(served):
    ds = StreamingDataset(
        served.url + "/shard-{000000..000003}.tar", seed=1, batch_size=3, retry=FAST
    )
    assert ds.shards.counts == [5, 5, 5, 5]  # from the manifest beside the shards
    got = flat_indices(DataLoader(ds, batch_size=None, num_workers=2))
    assert sorted(got) == list(range(20))


@pytest.mark.parametrize("block_size", [2048, 1 << 20])
def test_http_dropped_connection_resumes_without_loss(served, block_size):
    served.faults.drop_after["shard-000001.tar"] = 3000  # mid shard (and mid block)
    ds = StreamingDataset(
        served.url, seed=0, retry=RetryConfig(attempts=3, backoff=0.01, block_size=block_size)
    )
    got = flat_indices(ds)
    assert Counter(got) == Counter(range(20))
    ranges = served.gets("shard-000001.tar")
    assert "shard-000001.tar" not in served.faults.drop_after  # the fault fired
    assert any(r.startswith("bytes=3000-") for r in ranges)  # the rest asked from the byte reached
    assert block_size != 2048 or ranges.count("bytes=2048-4095") == 1  # not the whole block again


def test_http_5xx_is_retried(served):
    served.faults.statuses["shard-000002.tar"] = [503, 500, 503]
    got = flat_indices(StreamingDataset(served.url, seed=0, retry=FAST, batch_size=4))
    assert Counter(got) == Counter(range(20))
    assert len(served.gets("shard-000002.tar")) >= 4


def test_http_429_then_success(served):
    served.faults.statuses["shard-000000.tar"] = [429]
    assert sorted(flat_indices(StreamingDataset(served.url, retry=FAST))) == list(range(20))


def test_http_unreachable_after_retries_names_the_shard(served):
    served.faults.statuses["shard-000003.tar"] = [503] * 100
    with pytest.raises(ShardReadError, match=r"shard-000003.tar.* after 4 attempts"):
        list(StreamingDataset(served.url, retry=FAST))


def test_http_missing_shard_fails_at_once(served, slow_retry):
    (Path(served.root) / "shard-000001.tar").unlink()
    with pytest.raises(ShardReadError, match=f"{served.url}/shard-000001.tar.*missing"):
        list(StreamingDataset(served.url, retry=slow_retry))
    assert BACKOFFS == []  # no backoff: not retried
    asked = [(m, r) for m, n, r in served.requests if n == "shard-000001.tar"]
    assert asked and len(set(asked)) == len(asked)  # no request repeated: not retried


def test_http_truncated_shard(served):
    truncate(Path(served.root) / "shard-000002.tar", 5000)
    with pytest.raises(ShardReadError, match=f"truncated shard '{served.url}/shard-000002.tar'"):
        list(StreamingDataset(served.url, retry=FAST))
    ds = StreamingDataset(served.url, retry=FAST, on_error="skip", batch_size=5)
    with pytest.warns(RuntimeWarning, match="shard-000002.tar"):
        got = flat_indices(ds)
    assert len(got) == 20 and set(got) < set(range(20)) and {0, 5, 15} <= set(got)


def test_http_corrupt_sample_names_url_and_key(served):
    corrupt_member(Path(served.root) / "shard-000003.tar", "s00017.feat.msgpack")
    with pytest.raises(SampleError) as err:
        list(StreamingDataset(served.url, retry=FAST))
    assert err.value.shard == f"{served.url}/shard-000003.tar" and err.value.key == "s00017"


# -- S3 -------------------------------------------------------------------------------------


@pytest.fixture
def s3_data(s3_server, tmp_path, request):  # noqa: F811
    root = write_shards(tmp_path / "ds", 20, 5)
    url = s3_server.upload(root, "loff", request.node.name)
    return url, root, s3_server


def test_s3_epoch_matches_local(s3_data):
    url, root, server = s3_data
    remote = StreamingDataset(url, seed=2, storage_options=server.storage_options, batch_size=4)
    local = StreamingDataset(root, seed=2, batch_size=4)
    assert flat_indices(remote) == flat_indices(local)


def test_s3_dataloader_workers_and_endpoint_option(s3_data):
    url, _, server = s3_data
    ds = StreamingDataset(
        url + "/manifest.json", storage_options={"endpoint_url": server.endpoint}, batch_size=3
    )
    assert sorted(flat_indices(DataLoader(ds, batch_size=None, num_workers=2))) == list(range(20))


def test_s3_missing_shard(s3_data, slow_retry):
    url, _, server = s3_data
    server.filesystem().rm(f"{url}/shard-000002.tar")
    ds = StreamingDataset(url, storage_options=server.storage_options, retry=slow_retry)
    with pytest.raises(ShardReadError, match=f"{url}/shard-000002.tar.*missing"):
        list(ds)
    assert BACKOFFS == []  # a missing object is not retried


# -- ResumableReader ------------------------------------------------------------------------


class FlakyFS:
    """Wraps a filesystem: every other range request fails, every third answer is cut short."""

    def __init__(self, fs):
        self.fs, self.calls = fs, 0

    def size(self, path):
        return self.fs.size(path)

    def cat_file(self, path, start, end):
        self.calls += 1
        if self.calls % 2 == 0:
            raise ConnectionResetError("peer reset")
        data = self.fs.cat_file(path, start=start, end=end)
        return data[: max(1, len(data) // 2)] if self.calls % 3 == 0 else data


def test_resumable_reader_survives_failures_and_short_answers(tmp_path):
    payload = bytes(range(256)) * 300
    (tmp_path / "f.bin").write_bytes(payload)
    fs = FlakyFS(fsspec.filesystem("file"))
    r = ResumableReader(
        "file.bin", fs, str(tmp_path / "f.bin"), retry=RetryConfig(backoff=0.0, block_size=1000)
    )
    parts, sizes = [], [1, 512, 3000, 7, 1000, 10**9]
    for n in sizes:
        parts.append(r.read(n))
    assert b"".join(parts) == payload and r.read(10) == b"" and r.tell() == len(payload)
    r.seek(100)
    assert r.read(5) == payload[100:105]


def test_with_retries_gives_up_and_classifies():
    calls = []

    def failing():
        calls.append(1)
        raise TimeoutError("slow")

    with pytest.raises(ShardReadError, match="'u' after 3 attempts"):
        with_retries(failing, url="u", retry=RetryConfig(attempts=3, backoff=0.0))
    assert len(calls) == 3
    with pytest.raises(ShardReadError, match="missing"):
        with_retries(
            lambda: (_ for _ in ()).throw(FileNotFoundError("x")),
            url="u",
            retry=RetryConfig(backoff=0.0),
        )


class _Status(Exception):
    def __init__(self, status):
        self.status = status


class _Boto(Exception):
    def __init__(self, code, http=400):
        self.response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": http}}


@pytest.mark.parametrize(
    "err,transient",
    [
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (_Status(503), True),
        (_Status(500), True),
        (_Status(429), True),
        (_Status(404), False),
        (_Status(403), False),
        (_Boto("SlowDown", 503), True),
        (_Boto("NoSuchKey", 404), False),
        (FileNotFoundError(), False),
        (PermissionError(), False),
        (ValueError(), False),
    ],
)
def test_is_transient(err, transient):
    assert is_transient(err) is transient


def test_http_manifest_is_retried_and_missing_manifest_is_clear(served):
    served.faults.statuses["manifest.json"] = [503, 502]
    assert len(StreamingDataset(served.url, retry=FAST)) == 20
    with pytest.raises(ManifestError, match=f"no manifest at '{served.url}/nothing/manifest.json'"):
        StreamingDataset(served.url + "/nothing", retry=FAST)


def test_http_shard_list_without_manifest_is_scanned(served):
    (Path(served.root) / "manifest.json").unlink()
    urls = [f"{served.url}/shard-{i:06d}.tar" for i in (2, 0)]
    ds = StreamingDataset(urls, shuffle=False, retry=FAST)
    assert ds.shards.counts == [5, 5] and ds.shards.features.shape == (4, 3, 3)
    assert [x["key"] for x in ds] == [f"s{i:05d}" for i in [*range(10, 15), *range(5)]]


def test_read_ahead_fetches_the_next_block_in_the_background(tmp_path):
    import fsspec

    from loffdata.storage.retry import RetryConfig
    from loffdata.storage.shardfile import ResumableReader

    data = bytes(range(256)) * 64  # 16 KiB
    (tmp_path / "f.bin").write_bytes(data)
    fs = fsspec.filesystem("file")
    r = ResumableReader(
        "file://f.bin", fs, str(tmp_path / "f.bin"), retry=RetryConfig(block_size=4096)
    )
    first = r.read(100)
    assert first == data[:100] and r._ahead is not None and r._ahead[0] == 4096
    r._ahead[1].result()  # the second block arrives while the first is being consumed
    assert r.read(len(data)) == data[100:] and r.requests == 3  # the block read ahead is used
    r.seek(10)
    assert r.read(5) == data[10:15]
    r.close()


def test_main_process_requests_still_work_after_forked_workers_read(served):
    """Forked DataLoader workers must not break the parent's pooled HTTP connections.

    fsspec drops the parent's filesystems in a forked child; garbage-collected there, their
    connections were unregistered from the epoll instance the child shares with the parent,
    and the parent's next request waited for its timeout (here: fails, no retries).
    """
    quick = RetryConfig(timeout=5, attempts=1)
    for _ in range(3):  # the manifest is read in this process, then workers are forked
        ds = StreamingDataset(served.url, batch_size=4, retry=quick)
        got = [
            i for b in DataLoader(ds, batch_size=None, num_workers=2) for i in b["index"].tolist()
        ]
        assert sorted(got) == list(range(20))
