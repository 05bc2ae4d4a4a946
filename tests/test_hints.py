"""Errors that say what to do: a parent or missing dataset dir, a CUDA device without CUDA."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from loffdata.errors import ManifestError
from loffdata.hints import DeviceError, check_dataset_dir, datasets_below
from loffdata.loader import LoffLoader

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def demo_like(make_dataset, tmp_path):
    make_dataset(n=6, shard_size=4, name="out/demo/train")
    make_dataset(n=4, shard_size=4, name="out/demo/val")
    return tmp_path / "out" / "demo"


def test_parent_dir_names_the_closest_dataset(demo_like, monkeypatch):
    monkeypatch.chdir(demo_like.parents[1])
    assert datasets_below("out/demo") == ["out/demo/train", "out/demo/val"]
    with pytest.raises(
        ManifestError,
        match=r"^no dataset at 'out/demo' \(no manifest.json\); did you mean "
        r"'out/demo/train'\?; datasets below it: out/demo/train, out/demo/val$",
    ):
        check_dataset_dir("out/demo")
    with pytest.raises(ManifestError, match="did you mean 'out/demo/train'"):
        LoffLoader("out/demo", batch_size=2, num_workers=0)
    with pytest.raises(ManifestError, match="does not exist"):
        LoffLoader("out/dmeo", batch_size=2, num_workers=0)
    check_dataset_dir("out/demo/train")  # a dataset: no error


@pytest.mark.slow
def test_inspect_cli_answers_in_one_line(demo_like):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "loffdata", "inspect", "out/demo"],
        cwd=demo_like.parents[1],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert (
        proc.stderr.strip().splitlines() == [proc.stderr.strip()]
        and "did you mean 'out/demo/train'" in proc.stderr
    )
    ok = subprocess.run(
        [sys.executable, "-m", "loffdata", "inspect", "out/demo/train"],
        cwd=demo_like.parents[1],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    assert ok.returncode == 0 and "samples     6 in 2 shards" in ok.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_fails_at_construction(make_dataset):
    root, _ = make_dataset(n=4, shard_size=4)
    with pytest.raises(
        DeviceError, match=r"device='cuda', but CUDA is not available.*use device='cpu'"
    ):
        LoffLoader(str(root), batch_size=2, num_workers=0, device="cuda")
