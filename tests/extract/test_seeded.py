"""Random-weight extraction is seeded; the weights' sha256 guards resuming and merging ranks."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from loffdata.errors import LoffError
from loffdata.extract.extractconfig import CONFIG_NAME, ExtractConfig, RandomWeightsWarning
from loffdata.extract.model import build_model, weights_sha256
from loffdata.extract.pipeline import extract
from tests.extract.test_images import make_folder

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--model",
    "test_vit",
    "--img_size",
    "32",
    "--shapes_counts",
    "{train: 6}",
    "--shard_size",
    "4",
    "--workers",
    "0",
    "--noprogress",
]


def _shard_hashes(out: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((out / "train").glob("*.tar"))
    }


@pytest.mark.slow
def test_two_identical_shard_runs_write_identical_shards(tmp_path):
    for run in ("a", "b"):
        proc = subprocess.run(
            [sys.executable, str(ROOT / "tools" / "shard.py"), *TINY, "--out", run],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = _shard_hashes(tmp_path / "a"), _shard_hashes(tmp_path / "b")
    assert len(a) == 2 and a == b
    manifest = json.loads((tmp_path / "a" / "train" / "manifest.json").read_text())
    record = json.loads((tmp_path / "a" / CONFIG_NAME).read_text())
    assert len(manifest["source"]["weights_sha256"]) == 64
    assert record["fingerprint"]["weights_sha256"] == manifest["source"]["weights_sha256"]


def _cfg(tmp_path: Path, **kw) -> ExtractConfig:
    base = {
        "out": str(tmp_path / "out"),
        "input": str(make_folder(tmp_path / "imgs", splits=("",))),
        "model": "test_vit",
        "img_size": 32,
        "shard_size": 2,
        "workers": 0,
        "progress": False,
    }
    return ExtractConfig(**{**base, **kw})


def test_seed_sets_the_weights():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        same = [
            weights_sha256(build_model(ExtractConfig(model="test_vit", img_size=32, seed=s)))
            for s in (0, 0, 1)
        ]
    assert same[0] == same[1] != same[2]


@pytest.mark.filterwarnings("ignore::loffdata.extract.extractconfig.RandomWeightsWarning")
def test_resume_with_other_weights_is_refused(tmp_path):
    extract(_cfg(tmp_path, seed=0))
    with pytest.raises(LoffError, match=r"weights_sha256.*the model weights differ"):
        extract(_cfg(tmp_path, seed=1))  # a folder input: only the weights change


@pytest.mark.filterwarnings("ignore::loffdata.extract.extractconfig.RandomWeightsWarning")
def test_merging_shards_of_other_weights_is_refused(tmp_path):
    cfg = _cfg(tmp_path)
    extract(cfg)
    sidecar = tmp_path / "out" / "train" / "shard-000001.json"
    doc = json.loads(sidecar.read_text())
    sidecar.write_text(
        json.dumps({**doc, "weights_sha256": "0" * 64})
    )  # as another rank would leave it
    with pytest.raises(LoffError, match=r"shards \[1\] were written by a model with other weights"):
        extract(cfg)
