import json

import pytest

from loffdata.errors import ManifestError
from loffdata.format.manifest import Manifest


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
