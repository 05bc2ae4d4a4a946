"""Bad data on local disk: strict errors name shard and key; skip mode keeps counts."""

import tarfile
from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader

from loffdata.errors import LoffError, SampleError, ShardReadError
from loffdata.stream.dataset import StreamingDataset
from tests.servers import write_shards


@pytest.fixture
def data(tmp_path):
    """20 samples in 4 shards of 5."""
    return write_shards(tmp_path / "ds", 20, 5)


def corrupt_member(shard, member: str, payload: bytes = b"\xc1\xc1\xc1\xc1") -> None:
    """Overwrites the start of a member's data (0xc1 is never valid msgpack)."""
    with tarfile.open(shard) as tar:
        offset = tar.getmember(member).offset_data
    with open(shard, "r+b") as f:
        f.seek(offset)
        f.write(payload)


def corrupt_header(shard, member: str) -> None:
    with tarfile.open(shard) as tar:
        offset = tar.getmember(member).offset
    with open(shard, "r+b") as f:
        f.seek(offset + 10)
        f.write(b"\xff\xfe")


def truncate(shard, keep: int) -> None:
    data = shard.read_bytes()
    shard.write_bytes(data[:keep])


def flat_indices(items):
    out = []
    for x in items:
        out += x["index"].tolist() if torch.is_tensor(x["index"]) else [x["index"]]
    return out


def test_corrupt_sample_strict_names_shard_and_key(data):
    corrupt_member(data / "shard-000001.tar", "s00007.feat.msgpack")
    with pytest.raises(SampleError) as err:
        list(StreamingDataset(data, seed=0))
    assert err.value.shard.endswith("shard-000001.tar") and err.value.key == "s00007"
    assert "shard-000001.tar" in str(err.value) and "s00007" in str(err.value)


def test_corrupt_sample_strict_through_dataloader_workers(data):
    corrupt_member(data / "shard-000002.tar", "s00012.feat.msgpack")
    with pytest.raises(SampleError, match="s00012") as err:
        list(DataLoader(StreamingDataset(data, batch_size=4), batch_size=None, num_workers=2))
    assert "shard-000002.tar" in str(err.value)


def test_corrupt_label_strict(data):
    corrupt_member(data / "shard-000000.tar", "s00003.cls", b"x")
    with pytest.raises(SampleError, match="s00003"):
        list(StreamingDataset(data, shuffle=False))


@pytest.mark.parametrize("batch_size", [None, 3])
def test_corrupt_sample_skip_keeps_count(data, batch_size):
    corrupt_member(data / "shard-000001.tar", "s00007.feat.msgpack")
    ds = StreamingDataset(data, seed=1, on_error="skip", batch_size=batch_size, shuffle_buffer=4)
    with pytest.warns(RuntimeWarning, match="s00007"):
        got = flat_indices(ds)
    assert len(got) == 20 and ds.skipped["samples"] == 1
    counts = Counter(got)
    assert 7 not in counts and set(counts) == set(range(20)) - {7}
    assert sum(counts.values()) - len(counts) == 1  # one good sample stands in for the bad one


def test_truncated_shard_strict(data):
    truncate(data / "shard-000002.tar", 3000)
    with pytest.raises(ShardReadError, match="truncated shard .*shard-000002.tar"):
        list(StreamingDataset(data))


@pytest.mark.parametrize("batch_size, lost", [(None, {11, 12, 13, 14}), (4, {12, 13, 14})])
def test_truncated_shard_skip_drops_the_rest_of_the_shard(data, batch_size, lost):
    shard = data / "shard-000002.tar"
    with tarfile.open(shard) as tar:
        keep = tar.getmember("s00012.feat.msgpack").offset + 700  # mid sample 12
    truncate(shard, keep)
    ds = StreamingDataset(data, seed=3, on_error="skip", batch_size=batch_size)
    with pytest.warns(RuntimeWarning, match="shard-000002.tar"):
        got = flat_indices(ds)
    # Read in sequence (single samples), sample 11 is lost too: the reader only knows a
    # sample is complete once the next sample's header has been read, and that is where
    # the shard breaks. Batches from local shards read each sample with the header after
    # it (random access), so sample 11 survives.
    assert len(got) == 20 and ds.skipped["samples"] == len(lost)
    assert set(got) == set(range(20)) - lost


def test_corrupt_tar_header(data):
    corrupt_header(data / "shard-000003.tar", "s00016.feat.msgpack")
    with pytest.raises(ShardReadError, match="corrupt tar header.*shard-000003.tar"):
        list(StreamingDataset(data))
    ds = StreamingDataset(data, on_error="skip", shuffle=False)
    with pytest.warns(RuntimeWarning):
        got = flat_indices(ds)
    assert got == list(range(15)) + [14] * 5  # sample 15 ends only where the bad header starts


def test_missing_shard(data):
    (data / "shard-000001.tar").unlink()
    with pytest.raises(ShardReadError, match="shard-000001.tar"):
        list(StreamingDataset(data))
    ds = StreamingDataset(data, on_error="skip", shuffle=False)
    with pytest.warns(RuntimeWarning, match="shard-000001.tar"):
        got = flat_indices(ds)
    assert got == list(range(5)) + [4] * 5 + list(range(10, 20))


def test_shard_shorter_than_manifest(data):
    import json

    m = json.loads((data / "manifest.json").read_text())
    m["shards"][3]["samples"] = 6
    m["num_samples"] = 21
    (data / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(
        ShardReadError, match="shard-000003.tar.* ended after 5 samples, manifest says 6"
    ):
        list(
            StreamingDataset(data, batch_size=4)
        )  # its sidecar (5 samples) is refused: read in sequence
    del m["shards"][3]["index"]  # without an index the shard is read in sequence
    (data / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(
        ShardReadError, match="shard-000003.tar.* ended after 5 samples, manifest says 6"
    ):
        list(StreamingDataset(data))


def test_skip_with_nothing_readable_fails_clearly(tmp_path):
    root = write_shards(tmp_path / "one", 3, 3)
    (root / "shard-000000.tar").unlink()
    with pytest.warns(RuntimeWarning), pytest.raises(LoffError, match="no readable sample"):
        list(StreamingDataset(root, on_error="skip"))


def test_bad_sample_first_in_worker_gets_the_next_good_one(data):
    corrupt_member(data / "shard-000000.tar", "s00000.feat.msgpack")
    ds = StreamingDataset(data, on_error="skip", shuffle=False)
    with pytest.warns(RuntimeWarning):
        got = flat_indices(ds)
    assert got == [1, 1] + list(range(2, 20))


def test_batched_bad_first_sample_gets_the_next_good_one(data):
    corrupt_member(data / "shard-000000.tar", "s00000.feat.msgpack")
    ds = StreamingDataset(data, on_error="skip", shuffle=False, batch_size=3)
    with pytest.warns(RuntimeWarning):
        batches = list(ds)
    assert batches[0]["index"].tolist() == [1, 1, 2] and batches[0]["key"] == [
        "s00001",
        "s00001",
        "s00002",
    ]
    assert (batches[0]["features"][0] == batches[0]["features"][1]).all()
    assert flat_indices(batches) == [1, 1] + list(range(2, 20)) and len(batches) == len(ds)


def test_batched_skip_across_windows_before_the_first_good_sample(data):
    (data / "shard-000000.tar").unlink()
    ds = StreamingDataset(data, on_error="skip", shuffle=False, batch_size=2, shuffle_buffer=2)
    with pytest.warns(RuntimeWarning):
        got = flat_indices(ds)
    assert got == [5] * 6 + list(range(6, 20)) and ds.skipped["samples"] == 5
