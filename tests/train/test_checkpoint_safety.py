"""Checkpoints are never unpickled: a crafted checkpoint.pt cannot run code on resume."""

from __future__ import annotations

import os

import pytest
import torch

from loffdata.errors import LoffError
from loffdata.train.checkpoint import load_checkpoint
from loffdata.train.trainer import CHECKPOINT_NAME, train
from tests.train.test_train import _config, data  # noqa: F401  (module fixture)


class _RunsCode:
    """A pickle payload that runs a shell command when unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_checkpoint_is_refused_and_runs_nothing(data, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    train(_config(data, out, epochs=2, max_steps=3))
    path = out / CHECKPOINT_NAME
    genuine = load_checkpoint(path)  # what loffdata writes loads with weights_only=True
    assert genuine["step"] == 3 and isinstance(genuine["model"], dict)
    marker = tmp_path / "pwned"
    torch.save({**genuine, "history": [_RunsCode(marker)]}, path)
    with pytest.raises(LoffError, match="refused to load") as err:
        train(_config(data, out, epochs=2, resume=True))
    assert str(path) in str(err.value) and not marker.exists()
    torch.load(path, weights_only=False)  # the same file, unpickled: the code does run
    assert marker.exists()


def test_checkpoint_holds_only_plain_types(data, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    train(_config(data, out, epochs=1, augment={"preset": "loffta", "hflip": 0.0}))
    ckpt = torch.load(out / CHECKPOINT_NAME, weights_only=True)
    assert ckpt["config"]["augment"] == {"preset": "loffta", "hflip": 0.0} and ckpt["epoch"] == 1


def test_no_code_loads_checkpoints_unsafely():
    """``weights_only=False`` nowhere but above, where it shows what the refusal prevents."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    needle = "weights_only=" + "False"
    found = [
        str(p.relative_to(root))
        for d in ("loffdata", "recipes", "tools", "benchmarks", "tests")
        for p in (root / d).rglob("*.py")
        if needle in p.read_text(encoding="utf-8")
    ]
    assert found == ["tests/train/test_checkpoint_safety.py"], found
