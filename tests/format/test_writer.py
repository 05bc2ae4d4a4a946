import hashlib
import os

import numpy as np
import pytest

from loffdata.format.manifest import Manifest
from loffdata.format.tar import iter_sample_members
from loffdata.format.writer import ShardWriter, WriterConfig, write_dataset
from tests.conftest import synthetic_samples


def test_shards_bounded_by_count_and_manifest_roundtrip(make_dataset):
    root, manifest = make_dataset(n=21, shard_size=8)
    assert [s.samples for s in manifest.shards] == [8, 8, 5]
    assert sorted(os.listdir(root)) == [
        "manifest.json",
        *(f"shard-00000{i}.{e}" for i in range(3) for e in ("idx", "tar")),
    ]
    loaded = Manifest.load(str(root))
    a, b = loaded.to_dict(), manifest.to_dict()
    np.testing.assert_allclose(a.pop("stats")["std"], b.pop("stats")["std"], rtol=1e-12)
    assert a == b
    assert loaded.features.shape == (8, 4, 4) and loaded.features.dtype == "float16"
    assert loaded.classes == ["c0", "c1", "c2"] and loaded.num_samples == 21
    for info in loaded.shards:
        data = (root / info.name).read_bytes()
        assert len(data) == info.bytes and hashlib.sha256(data).hexdigest() == info.sha256


def test_shards_bounded_by_bytes(tmp_path):
    items = synthetic_samples(10, (16, 8, 8))  # 2 KiB of float16 per sample
    m = write_dataset(str(tmp_path), items, config=WriterConfig(max_samples=1000, max_bytes=5000))
    assert all(s.samples <= 3 for s in m.shards) and m.num_samples == 10


def test_every_sample_written_once_in_order(make_dataset):
    root, manifest = make_dataset(n=17, shard_size=5)
    keys = [
        k
        for info in manifest.shards
        for k, _ in iter_sample_members(open(root / info.name, "rb"), shard=info.name)
    ]
    assert keys == [f"s{i:07d}" for i in range(17)]


def test_stats_in_manifest_match_data(make_dataset):
    _, manifest = make_dataset(n=30, shard_size=8, dtype="float32")
    feats = np.stack([f for _, f, _ in synthetic_samples(30, (8, 4, 4))])
    np.testing.assert_allclose(
        manifest.stats.mean, feats.mean(axis=(0, 2, 3)), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(manifest.stats.std, feats.std(axis=(0, 2, 3)), rtol=1e-5)


def test_interrupted_writer_leaves_no_visible_partial_shard(tmp_path):
    with (
        pytest.raises(RuntimeError, match="crash"),
        ShardWriter(str(tmp_path), WriterConfig(max_samples=4)) as w,
    ):
        for i, (key, feats, label) in enumerate(synthetic_samples(10)):
            if i == 6:
                raise RuntimeError("crash")
            w.write(key, feats, label=label)
    assert sorted(os.listdir(tmp_path)) == [
        "shard-000000.idx",
        "shard-000000.tar",
    ]  # the complete one only
    assert [s.samples for s in w.shards] == [4]


def test_partial_shard_under_temporary_name_until_commit(tmp_path):
    w = ShardWriter(str(tmp_path), WriterConfig(max_samples=4))
    key, feats, label = next(synthetic_samples(1))
    w.write(key, feats, label=label)
    visible = [n for n in os.listdir(tmp_path) if not n.startswith(".")]
    assert visible == [] and any(".tmp-" in n for n in os.listdir(tmp_path))
    w.close()
    assert sorted(os.listdir(tmp_path)) == ["shard-000000.idx", "shard-000000.tar"]


def test_feature_shape_must_not_change(tmp_path):
    with pytest.raises(ValueError, match="differ from the first"), ShardWriter(str(tmp_path)) as w:
        w.write("a", np.zeros((2, 2, 2), np.float32))
        w.write("b", np.zeros((3, 2, 2), np.float32))


def test_write_to_fsspec_memory_url():
    m = write_dataset(
        "memory://loff/test", synthetic_samples(5), config=WriterConfig(max_samples=2)
    )
    assert Manifest.load("memory://loff/test").num_samples == 5 == m.num_samples


def test_int8_storage_spec(make_dataset):
    _, manifest = make_dataset(n=4, dtype="int8")
    assert manifest.features.dtype == "int8"
