"""The benchmark, the plot tool and the docs snippet keep working."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from loffdata.augment import Augmenter, AugmentSpec

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_quick_runs():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/bench_augment.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    assert "samples/s" in out.stdout and re.search(r"torch\s+cpu\s+\d+", out.stdout)


@pytest.mark.slow
def test_plot_tool_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    target = tmp_path / "aug.png"
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools/plot_augmentations.py"), "--out", str(target)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and target.stat().st_size < 300_000


def test_auto_backend_is_torch_on_cpu():
    assert Augmenter(AugmentSpec(), backend="auto").backend_name == "torch"


def test_mixing_without_labels_returns_none():
    aug = Augmenter(AugmentSpec(mixup=1.0, num_classes=3), backend="torch")
    out, y = aug(torch.randn(4, 2, 7, 7), None, indices=np.arange(4))
    assert out.shape == (4, 2, 7, 7) and y is None


def test_docs_mention_every_spec_field():
    import dataclasses

    text = (ROOT / "docs/augmentations.md").read_text()
    missing = [f.name for f in dataclasses.fields(AugmentSpec) if f"`{f.name}" not in text]
    assert not missing
