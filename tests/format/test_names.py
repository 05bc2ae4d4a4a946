"""Names resolve once, the way the transport will (issue 22, items 1 and 6).

Two spellings of one shard (``a.tar`` and ``%2e/a.tar``, ``./a.tar``, ``sub/../a.tar``) are
one shard for local, HTTP and S3 alike, and a manifest or list that names it twice is
refused before anything is read; dot-files are never shards, in manifests, lists and globs.
"""

from __future__ import annotations

import pytest

from loffdata.errors import LoffError, ManifestError, ShardReadError
from loffdata.format.manifest import check_shard_name
from loffdata.format.names import is_dot_file, remove_dot_segments, resolve_name, url_identity
from loffdata.stream.dataset import StreamingDataset
from tests.craft import archive, sample, write_crafted
from tests.servers import http_server, s3_server  # noqa: F401


@pytest.mark.parametrize(
    "path, resolved",
    [
        ("a/./b", "a/b"),
        ("a/b/../c", "a/c"),
        ("./a", "a"),
        ("a/..", ""),
        ("../a", "../a"),
        ("a/../../b", "../b"),
        ("/a/../b", "/b"),
        ("a//b", "a/b"),
        ("a/b/.", "a/b"),
    ],
)
def test_dot_segments_are_removed_as_rfc3986_says(path, resolved):
    assert remove_dot_segments(path) == resolved


@pytest.mark.parametrize(
    "name", ["%2e/a.tar", "./a.tar", "sub/../a.tar", "%2E/%2e/a.tar", "%252e/a.tar", "%61.tar"]
)
def test_spellings_of_one_name_resolve_alike(name):
    assert resolve_name(name) == "a.tar"
    assert url_identity(f"http://h/d/{name}") == url_identity("http://H/d/a.tar")


@pytest.mark.parametrize("name", [".a.tar", "%2ea.tar", "sub/.a.tar", ".shard-000001.tar.tmp-1234"])
def test_dot_files_are_never_shard_names(name):
    assert is_dot_file(name)
    with pytest.raises(ManifestError, match="dot-file"):
        check_shard_name(name)


def _two_spellings(tmp_path, second: str, where: str = "ds"):
    root = write_crafted(
        tmp_path / where,
        {"a.tar": archive(sample("k0", 0), sample("k1", 1)), "b.tar": archive(sample("k2", 2))},
    )
    text = (root / "manifest.json").read_text().replace('"b.tar"', f'"{second}"')
    (root / "manifest.json").write_text(text)
    return root


@pytest.mark.parametrize("second", ["%2e/a.tar", "%2E/a.tar", "sub/%2e%2e/a.tar", "%252e/a.tar"])
def test_one_shard_twice_is_refused_locally(tmp_path, second):
    root = _two_spellings(tmp_path, second)
    with pytest.raises(ManifestError, match="duplicate shard names|leaves the dataset"):
        StreamingDataset(str(root))


def test_one_shard_twice_over_http_is_refused_before_any_shard_is_read(tmp_path, http_server):  # noqa: F811
    _two_spellings(tmp_path / "www", "%2e/a.tar")
    with pytest.raises(ManifestError, match="duplicate shard names: '%2e/a.tar'"):
        StreamingDataset(f"{http_server.url}/ds")
    assert {n for _, n, _ in http_server.requests} == {"manifest.json"}


def test_one_shard_twice_on_s3_is_refused(tmp_path, s3_server):  # noqa: F811
    root = _two_spellings(tmp_path, "%2e/a.tar")
    url = s3_server.upload(root, "names", "ds")
    with pytest.raises(ManifestError, match="duplicate shard names"):
        StreamingDataset(url, storage_options=s3_server.storage_options)


def test_one_shard_twice_in_a_list_is_refused(tmp_path, http_server):  # noqa: F811
    root = write_crafted(tmp_path / "www" / "ds", {"a.tar": archive(sample("k0", 0))})
    with pytest.raises(ShardReadError, match="listed twice"):
        StreamingDataset([str(root / "a.tar"), str(root / "." / "a.tar")])
    with pytest.raises(ShardReadError, match="listed twice"):
        StreamingDataset([f"{http_server.url}/ds/a.tar", f"{http_server.url}/ds/%2e/a.tar"])
    assert http_server.requests == []


def test_globs_skip_dot_files(tmp_path):
    root = write_crafted(
        tmp_path / "ds",
        {"shard-000000.tar": archive(sample("k0", 0), sample("k1", 1))},
        {"shard-000000.tar": 2},
    )
    (root / ".shard-000001.tar").write_bytes(archive(sample("k2", 2), sample("k3", 3)))
    ds = StreamingDataset(str(root / "*.tar"), batch_size=1)
    assert ds.shards.urls == [str(root / "shard-000000.tar")]
    assert len(ds) == 2 and sum(1 for _ in ds) == 2


def test_a_dot_file_named_in_a_list_is_refused(tmp_path):
    root = write_crafted(tmp_path / "ds", {"a.tar": archive(sample("k0", 0))})
    (root / ".b.tar").write_bytes(archive(sample("k1", 1)))
    with pytest.raises(LoffError, match="dot-file"):
        StreamingDataset([str(root / "a.tar"), str(root / ".b.tar")])
