"""The local shard cache: atomic downloads, reuse across epochs and processes, LRU budget."""

import io
import os
from pathlib import Path

import pytest

from loffdata.errors import ShardReadError
from loffdata.storage.cache import CacheConfig, ShardCache
from loffdata.storage.retry import RetryConfig
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
    assert sorted(os.listdir(tmp_path)) == [".locks", ".meta", os.path.basename(path)]


def test_lru_eviction_by_mtime(tmp_path):
    cache, calls = ShardCache(CacheConfig(str(tmp_path), limit_bytes=25)), []
    paths = [cache.get(f"u/{i}.tar", opener_of(b"z" * 10, calls)) for i in range(2)]
    os.utime(paths[0], (1, 1))
    os.utime(paths[1], (2, 2))
    cache.get("u/0.tar", opener_of(b"z" * 10, calls))  # a hit refreshes 0, so 1 is now oldest
    cache.get("u/2.tar", opener_of(b"z" * 10, calls))
    assert sorted(os.listdir(tmp_path)) == [".locks", ".meta"] + sorted(
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


def _cached_dataset(http_server, tmp_path):  # noqa: F811
    write_shards(Path(http_server.root), 10, 5)
    cache_dir = tmp_path / "cache"

    def read():
        ds = StreamingDataset(
            http_server.url, shuffle=False, cache_dir=cache_dir, retry=RetryConfig(backoff=0.01)
        )
        return [(x["key"], float(x["features"].flat[0])) for x in ds]

    return cache_dir, read


def _tar_gets(server) -> int:
    return len([r for r in server.requests if r[0] == "GET" and r[1].endswith(".tar")])


def test_flipped_bytes_in_a_cached_shard_are_never_served(http_server, tmp_path):  # noqa: F811
    cache_dir, read = _cached_dataset(http_server, tmp_path)
    want = read()
    assert _tar_gets(http_server) == 2
    copy = next(p for p in cache_dir.glob("*-shard-000000.tar"))
    data = bytearray(copy.read_bytes())
    data[600] ^= 0xFF  # inside the first sample's feature payload: no tar check would notice
    copy.write_bytes(bytes(data))
    assert read() == want and _tar_gets(http_server) == 3  # fetched again, the good bytes served
    assert copy.read_bytes() == (Path(http_server.root) / "shard-000000.tar").read_bytes()


def test_a_same_size_republish_is_fetched_again(http_server, tmp_path):  # noqa: F811
    cache_dir, read = _cached_dataset(http_server, tmp_path)
    read()
    root = Path(http_server.root)
    old = (root / "shard-000000.tar").read_bytes()
    write_shards(root, 10, 5, offset=100)  # new contents, same sizes, a new manifest
    assert len((root / "shard-000000.tar").read_bytes()) == len(old) != 0
    got = read()
    assert got[0] == ("s00100", 100.0) and _tar_gets(http_server) == 4
    record = ShardCache(CacheConfig(str(cache_dir))).version(f"{http_server.url}/shard-000000.tar")
    assert (
        record["size"] == len(old) and record["version"]["etag"]
    )  # the version it was fetched under


def test_stale_temporaries_are_reclaimed_and_live_ones_counted(tmp_path):
    import subprocess

    root = tmp_path / "c"
    cache = ShardCache(CacheConfig(str(root), limit_bytes=25))
    dead = subprocess.Popen(["true"])  # a process that is gone (not an interpreter: no imports)
    dead.wait()
    stale = root / f".tmp-{dead.pid}-abcdef012345-x.tar"
    live = root / f".tmp-{os.getpid()}-abcdef012345-y.tar"
    for p in (stale, live):
        p.write_bytes(b"t" * 10)
        os.utime(p, (1, 1))  # untouched for long
    calls: list = []
    cache.get("u/a.tar", opener_of(b"a" * 10, calls))
    assert not stale.exists() and live.exists() and cache.reclaimed == 1
    cache.get("u/b.tar", opener_of(b"b" * 10, calls))  # 10 live + 10 + 10 > 25: a.tar goes
    assert not Path(cache.path_for("u/a.tar")).exists() and live.exists()
    assert sum(e[1] for e in cache.entries()) == 20
