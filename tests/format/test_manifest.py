import json

import numpy as np
import pytest

from loffdata.errors import ManifestError
from loffdata.format.manifest import Manifest
from loffdata.format.writer import ShardWriter, WriterConfig


def _load_dict(root):
    return json.loads((root / "manifest.json").read_text())


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(format="other"), "'format' is 'other'"),
        (lambda d: d.update(version=99), "unsupported version 99"),
        (lambda d: d.update(num_samples=5), "num_samples 5"),
        (lambda d: d["features"].update(dtype="float8"), "known 'dtype'"),
        (lambda d: d["features"].update(shape=[8, -1]), "non-negative"),
        (lambda d: d["shards"][0].update(name="../x.tar"), "bad shard entry"),
        (
            lambda d: d["shards"].append(dict(d["shards"][0])) or d.pop("num_samples"),
            "duplicate shard",
        ),
        (lambda d: d["stats"].update(mean=[0.0], std=[1.0]), "stats have 1 channels"),
        (lambda d: d.pop("shards"), "KeyError"),
        (lambda d: d.update(classes="abc"), "list of strings"),
    ],
)
def test_invalid_manifests_are_rejected_with_clear_errors(make_dataset, mutate, message):
    root, _ = make_dataset(n=10, shard_size=4)
    d = _load_dict(root)
    mutate(d)
    (root / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(ManifestError, match=message) as e:
        Manifest.load(str(root))
    assert "manifest.json" in str(e.value)


def test_missing_and_non_json_manifest(tmp_path):
    with pytest.raises(ManifestError, match="no manifest at"):
        Manifest.load(str(tmp_path))
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        Manifest.load(str(tmp_path))


def test_shard_urls_relative_to_manifest(make_dataset):
    root, m = make_dataset(n=10, shard_size=4)
    assert (
        Manifest.load(str(root / "manifest.json")).shard_urls(str(root / "manifest.json"))[0]
        == f"{root}/shard-000000.tar"
    )
    assert m.shard_urls("s3://b/feats/")[2] == "s3://b/feats/shard-000002.tar"


def _written(root, lo, hi, prefix):
    with ShardWriter(str(root), WriterConfig(prefix=prefix, max_samples=2)) as w:
        for i in range(lo, hi):
            w.write(f"k{i:03d}", np.full((3, 2, 2), i, np.float32), label=i % 2)
    return w


def test_from_records_lists_shards_in_order_and_merges_statistics(tmp_path):
    a, b = _written(tmp_path, 0, 5, "a"), _written(tmp_path, 5, 8, "b")
    old = {**b.record(), "shard": b.record()["shards"][0]}  # a sidecar of the older form
    del old["shards"]
    m = Manifest.from_records([a.record(), {"features": None}, old], classes=["x", "y"])
    assert [s.name for s in m.shards] == [s.name for s in a.shards] + [b.shards[0].name]
    assert m.stats.count == 8 * 4 and np.allclose(m.stats.mean, 3.5)
    assert m.features.layout == "CHW" and m.classes == ["x", "y"]
    assert Manifest.from_dict(m.to_dict()).to_dict() == m.to_dict()
    with pytest.raises(ValueError, match="no sample"):
        Manifest.from_records([{"features": None}])
