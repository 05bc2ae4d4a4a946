"""The local shard cache: atomic downloads, reuse across epochs and processes, LRU budget."""

import io
import os
from pathlib import Path

import pytest

from loffdata.errors import ShardReadError
from loffdata.storage.cache import CacheConfig, ShardCache
from loffdata.storage.remote import RetryConfig
from loffdata.stream.dataset import StreamingDataset
from tests.servers import http_server, write_shards  # noqa: F401


def opener_of(data: bytes, calls: list):
    def opener():
        calls.append(1)
        return io.BytesIO(data)

    return opener


def test_get_downloads_once_then_hits(tmp_path):
    cache, calls = ShardCache(CacheConfig(str(tmp_path / "c"))), []
    p1 = cache.get("http://h/a/shard-1.tar", opener_of(b"x" * 10, calls), size=10)
    p2 = cache.get("http://h/a/shard-1.tar", opener_of(b"y" * 10, calls), size=10)
    assert p1 == p2 and Path(p1).read_bytes() == b"x" * 10 and len(calls) == 1
    assert (cache.hits, cache.misses) == (1, 1) and p1.endswith("-shard-1.tar")
    assert cache.path_for("http://h/b/shard-1.tar") != p1  # same name, other URL: other entry


def test_wrong_size_is_refetched_and_bad_download_leaves_nothing(tmp_path):
    cache, calls = ShardCache(CacheConfig(str(tmp_path))), []
    path = cache.get("u/s.tar", opener_of(b"abc", calls))
    assert cache.get("u/s.tar", opener_of(b"abcd", calls), size=4) == path and len(calls) == 2
    with pytest.raises(ShardReadError, match="'u/t.tar' has 2 bytes, expected 5"):
        cache.get("u/t.tar", opener_of(b"ab", calls), size=5)
    assert sorted(os.listdir(tmp_path)) == [".locks", os.path.basename(path)]


def test_lru_eviction_by_mtime(tmp_path):
    cache, calls = ShardCache(CacheConfig(str(tmp_path), limit_bytes=25)), []
    paths = [cache.get(f"u/{i}.tar", opener_of(b"z" * 10, calls)) for i in range(2)]
    os.utime(paths[0], (1, 1))
    os.utime(paths[1], (2, 2))
    cache.get("u/0.tar", opener_of(b"z" * 10, calls))  # a hit refreshes 0, so 1 is now oldest
    cache.get("u/2.tar", opener_of(b"z" * 10, calls))
    assert sorted(os.listdir(tmp_path)) == [".locks"] + sorted(
        os.path.basename(cache.path_for(f"u/{i}.tar")) for i in (0, 2)
    )
    tiny = ShardCache(CacheConfig(str(tmp_path / "tiny"), limit_bytes=1))
    assert os.path.exists(
        tiny.get("u/big.tar", opener_of(b"q" * 10, calls))
    )  # the shard just fetched stays


def test_dataset_reuses_cached_shards_across_epochs_and_objects(http_server, tmp_path):  # noqa: F811
    write_shards(Path(http_server.root), 20, 5)
    cache_dir = tmp_path / "cache"

    def make():
        return StreamingDataset(
            http_server.url, seed=1, cache_dir=cache_dir, retry=RetryConfig(backoff=0.01)
        )

    ds = make()
    first = [x["index"] for x in ds]
    gets = len([r for r in http_server.requests if r[0] == "GET" and r[1].endswith(".tar")])
    assert gets == 4 and len(list(cache_dir.glob("*.tar"))) == 4
    ds.set_epoch(1)
    second = [x["index"] for x in ds]
    assert [x["index"] for x in make()] == first and sorted(second) == list(range(20))
    assert len([r for r in http_server.requests if r[0] == "GET" and r[1].endswith(".tar")]) == 4


def test_dataset_with_a_tight_budget(http_server, tmp_path):  # noqa: F811
    write_shards(Path(http_server.root), 20, 5)
    shard_bytes = os.path.getsize(Path(http_server.root) / "shard-000000.tar")
    ds = StreamingDataset(
        http_server.url, cache_dir=tmp_path / "c", cache_limit_bytes=shard_bytes + 1, batch_size=5
    )
    assert sorted(i for b in ds for i in b["index"].tolist()) == list(range(20))
    assert len(list((tmp_path / "c").glob("*.tar"))) == 1


def test_truncated_remote_shard_is_not_cached(http_server, tmp_path):  # noqa: F811
    root = write_shards(Path(http_server.root), 10, 5)
    data = (root / "shard-000001.tar").read_bytes()
    (root / "shard-000001.tar").write_bytes(data[:3000])
    ds = StreamingDataset(
        http_server.url, shuffle=False, cache_dir=tmp_path / "c", retry=RetryConfig(backoff=0.01)
    )
    with pytest.raises(ShardReadError, match="shard-000001.tar' has 3000 bytes"):
        list(ds)
    assert len(list((tmp_path / "c").glob("*.tar"))) == 1
