"""Extraction straight to S3: the session's moto server on loopback, s3fs, dummy credentials."""

from __future__ import annotations

import warnings

import pytest

from loffdata.extract.pipeline import ExtractConfig, RandomWeightsWarning, extract
from loffdata.format.manifest import Manifest


@pytest.fixture
def s3_endpoint(s3_server, monkeypatch):
    """The session's moto S3 (tests/conftest.py), with a session token to keep out of records."""
    pytest.importorskip("s3fs")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    return s3_server.endpoint


def test_extract_to_s3_and_resume(s3_endpoint):
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint})
    fs.mkdir("feats")
    cfg = dict(
        out="s3://feats/demo",
        endpoint_url=s3_endpoint,
        model="test_resnet",
        img_size=64,
        shapes_counts={"train": 7, "val": 2},
        shard_size=3,
        batch_size=4,
        workers=0,
        progress=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        manifests = extract(ExtractConfig(**cfg))
        assert manifests["train"].num_samples == 7
        fs.invalidate_cache()
        fs.rm("feats/demo/train/shard-000002.json")  # as if the last shard never finished
        fs.rm("feats/demo/train/manifest.json")
        redone = []
        extract(ExtractConfig(**cfg), on_shard=lambda split, j: redone.append((split, j)))
    assert redone == [("train", 2)]
    m = Manifest.load("s3://feats/demo/train", client_kwargs={"endpoint_url": s3_endpoint})
    assert m.num_samples == 7 and len(m.shards) == 3 and m.classes[0] == "disc"
    fs.invalidate_cache()
    assert fs.exists("feats/demo/extract_config.json") and fs.exists(
        "feats/demo/val/shard-000000.tar"
    )
    text = fs.cat("feats/demo/extract_config.json").decode()
    assert "testing" not in text  # no credentials in the recorded configuration
