"""tools/shard.py and benchmarks/bench_extract.py as a user runs them (subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loffdata.format.manifest import Manifest

ROOT = Path(__file__).resolve().parents[2]


def run_script(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_help(tmp_path):
    proc = run_script(str(ROOT / "tools" / "shard.py"), "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (
        "--skip_bad" in proc.stdout and "--pooled" in proc.stdout and "--checkpoint" in proc.stdout
    )


@pytest.mark.slow
def test_default_dataset_quick(tmp_path):
    """The no-argument run, with fewer images: default model, default output layout."""
    proc = run_script(
        str(ROOT / "tools" / "shard.py"), "--shapes_counts", "{train: 24, val: 8}", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "RANDOM weights" in proc.stderr and "train: 24 samples" in proc.stdout
    out = tmp_path / "out" / "demo"
    train, val = Manifest.load(str(out / "train")), Manifest.load(str(out / "val"))
    assert (train.num_samples, val.num_samples) == (24, 8)
    assert train.features.shape == (192, 7, 7) and train.features.dtype == "float16"
    assert train.classes == val.classes and len(train.classes) == 10
    record = json.loads((out / "extract_config.json").read_text())
    assert record["config"]["model"] == "vit_tiny_patch16_224" and record["data_config"][
        "input_size"
    ] == [3, 112, 112]


@pytest.mark.slow
def test_cli_config_file_and_error(tmp_path):
    (tmp_path / "cfg.json").write_text(
        json.dumps(
            {"model": "test_resnet", "img_size": 64, "shapes_counts": {"train": 3}, "workers": 0}
        )
    )
    proc = run_script(
        str(ROOT / "tools" / "shard.py"),
        "--config",
        "cfg.json",
        "--out",
        "o",
        "--dtype",
        "int8",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    m = Manifest.load(str(tmp_path / "o" / "train"))
    assert m.num_samples == 3 and m.features.dtype == "int8" and m.features.shape == (96, 2, 2)
    proc = run_script(
        str(ROOT / "tools" / "shard.py"),
        "--input",
        str(tmp_path / "missing"),
        "--out",
        "o2",
        cwd=tmp_path,
    )
    assert proc.returncode != 0 and "missing" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_benchmark_quick(tmp_path):
    proc = run_script(
        str(ROOT / "benchmarks" / "bench_extract.py"),
        "--quick",
        "--model",
        "test_resnet",
        "--img_size",
        "64",
        "--workers",
        "0",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "ratio extraction/plain:" in proc.stdout
