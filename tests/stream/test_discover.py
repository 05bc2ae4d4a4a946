"""Glob patterns of shards (local, S3) and directories of datasets answered with their list."""

import pytest

from loffdata.errors import ShardReadError
from loffdata.stream.dataset import StreamingDataset
from loffdata.stream.discover import DatasetDirectoryError, expand_glob, find_datasets
from loffdata.stream.sources import resolve_source
from tests.servers import s3_server, write_shards  # noqa: F401


def test_local_glob_uses_the_sibling_manifest(tmp_path):
    root = write_shards(tmp_path / "ds", 23, 5)
    shards = resolve_source(f"{root}/shard-*.tar")
    assert [u.rsplit("/", 1)[1] for u in shards.urls] == [f"shard-{i:06d}.tar" for i in range(5)]
    assert shards.counts == [5, 5, 5, 5, 3] and None not in shards.sizes  # from the manifest
    ds = StreamingDataset(f"{root}/shard-00000[34].tar", shuffle=False)
    assert [x["index"] for x in ds] == list(range(8))  # indices within the selection
    assert [x["key"] for x in ds] == [f"s{i:05d}" for i in range(15, 23)]


def test_glob_errors_name_the_pattern(tmp_path):
    root = write_shards(tmp_path / "ds", 4, 2)
    with pytest.raises(ShardReadError, match=r"no \.tar shards match .*nothing-\*"):
        resolve_source(f"{root}/nothing-*.tar")
    with pytest.raises(ValueError, match="HTTP servers cannot be listed.*brace pattern"):
        resolve_source("http://127.0.0.1:1/ds/shard-*.tar")
    assert expand_glob(f"{root}/shard-000000.tar") is None  # not a pattern


def test_existing_local_name_with_brackets_is_not_a_pattern(tmp_path):
    root = write_shards(tmp_path / "run[1]", 6, 3)
    assert resolve_source(root).counts == [3, 3]


def test_s3_glob(s3_server, tmp_path):  # noqa: F811
    url = s3_server.upload(write_shards(tmp_path / "ds", 10, 4), "loff", "glob")
    shards = resolve_source(f"{url}/shard-*.tar", s3_server.storage_options)
    assert shards.urls == [f"{url}/shard-{i:06d}.tar" for i in range(3)]
    assert shards.counts == [4, 4, 2]
    ds = StreamingDataset(
        f"{url}/shard-*.tar", shuffle=False, storage_options=s3_server.storage_options
    )
    assert [x["key"] for x in ds] == [f"s{i:05d}" for i in range(10)]


def test_directory_of_datasets_is_answered_with_the_list(tmp_path):
    for split in ("train", "val"):
        write_shards(tmp_path / "demo" / split, 4, 2)
    write_shards(tmp_path / "demo" / "more" / "extra", 2, 2)
    expected = [str(tmp_path / "demo" / p) for p in ("more/extra", "train", "val")]
    assert find_datasets(str(tmp_path / "demo")) == expected
    with pytest.raises(DatasetDirectoryError, match="holds 3 datasets") as err:
        StreamingDataset(tmp_path / "demo")
    assert err.value.datasets == expected
    assert all(p in str(err.value) for p in expected)


def test_empty_directory_keeps_the_missing_manifest_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception, match="no manifest") as err:
        resolve_source(tmp_path / "empty")
    assert not isinstance(err.value, DatasetDirectoryError)


def test_a_broken_manifest_is_not_taken_for_a_directory_of_datasets(tmp_path):
    write_shards(tmp_path / "demo" / "train", 4, 2)
    (tmp_path / "demo" / "manifest.json").write_text("{not json")
    with pytest.raises(Exception, match="not valid JSON") as err:
        resolve_source(tmp_path / "demo")
    assert not isinstance(err.value, DatasetDirectoryError)
