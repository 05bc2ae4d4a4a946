"""loffdata.train.trainer and recipes/train.py: a tiny run end to end, checkpoints, resume,
torchrun."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from loffdata.train.trainer import (
    CHECKPOINT_NAME,
    CONFIG_NAME,
    LOG_NAME,
    TrainConfig,
    load_config,
    train,
)
from tests.train.synthetic import write_splits

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "recipes" / "train.py"
pytestmark = pytest.mark.filterwarnings("ignore::loffdata.train.run.FewStepsWarning")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    return write_splits(tmp_path_factory.mktemp("train_data"), train=96, val=30, shard=32)


def _config(data: dict[str, str], out: Path, **overrides) -> TrainConfig:
    values = {
        "train": data["train"],
        "val": data["val"],
        "out": str(out),
        "model": "deit_t",
        "depth": 1,
        "embed_dim": 32,
        "num_heads": 2,
        "batch_size": 16,
        "epochs": 4,
        "lr": 3e-3,
        "warmup_epochs": 1,
        "num_workers": 0,
        "device": "cpu",
        "seed": 0,
        "progress": False,
        "drop_path_rate": 0.1,
    }  # drop path: RNG state must survive a resume too
    return TrainConfig(**{**values, **overrides})


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / CHECKPOINT_NAME, map_location="cpu", weights_only=True)["model"]


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("ref") / "run"
    return out, train(_config(data, out))


def test_loss_decreases_and_outputs_are_written(reference):
    out, results = reference
    history = results["history"]
    assert results["completed"] and [r["epoch"] for r in history] == [0, 1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["val_acc"] > 0.5  # 3 classes: chance is 1/3
    lines = [json.loads(line) for line in (out / LOG_NAME).read_text().splitlines()]
    assert len(lines) == 4
    for key in (
        "epoch",
        "train_loss",
        "val_loss",
        "val_acc",
        "samples_per_s",
        "wait_fraction",
        "time",
    ):
        assert key in lines[0]
    config = json.loads((out / CONFIG_NAME).read_text())
    assert config["resolved"]["in_chans"] == 16 and config["resolved"]["num_classes"] == 3
    ckpt = torch.load(out / CHECKPOINT_NAME, weights_only=True)
    assert ckpt["epoch"] == 4 and ckpt["step"] == 4 * 6 and ckpt["loader"] is None
    lrs = {
        g["lr_scale"]: g["lr"] for g in ckpt["optimizer"]["param_groups"]
    }  # the probe path's own rate
    assert set(lrs) == {1.0, 10.0} and lrs[10.0] == pytest.approx(10 * lrs[1.0])
    assert any(k.startswith("probe.") for k in ckpt["model"])
    assert torch.isfinite(ckpt["model"]["head_loss"]).all()  # the loop tracked both heads' losses
    assert not list(out.glob("*.tmp"))


@pytest.mark.parametrize("stop_at", [12, 15], ids=["epoch_boundary", "mid_epoch"])
def test_resume_matches_uninterrupted_run(data, tmp_path, reference, stop_at):
    ref_out, ref = reference
    out = tmp_path / "run"
    first = train(_config(data, out, max_steps=stop_at))
    assert not first["completed"] and first["step"] == stop_at
    assert torch.load(out / CHECKPOINT_NAME, weights_only=True)["step"] == stop_at
    resumed = train(_config(data, out, resume=True))
    assert resumed["completed"] and resumed["step"] == ref["step"]
    _assert_same_weights(out, ref_out)
    keys = ("epoch", "step", "train_loss", "val_loss", "val_acc")
    assert [{k: r[k] for k in keys} for r in resumed["history"]] == [
        {k: r[k] for k in keys} for r in ref["history"]
    ]


def test_resume_errors(data, tmp_path, reference):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(_config(data, tmp_path / "empty", resume=True))
    with pytest.raises(ValueError, match="batch_size"):
        train(_config(data, reference[0], resume=True, batch_size=8))


def test_config_errors(data, tmp_path):
    with pytest.raises(ValueError, match="unknown config key"):
        load_config(None, train="x", lrr=1)
    with pytest.raises(ValueError, match="in_chans: config 8 vs manifest 16"):
        train(_config(data, tmp_path / "r", in_chans=8))
    with pytest.raises(ValueError, match="amp"):
        _config(data, tmp_path, amp="fp8")


def test_demo_yaml_loads_with_overrides():
    config = load_config(ROOT / "recipes" / "configs" / "demo.yaml", epochs=2, augment="none")
    assert config.epochs == 2 and config.augment == "none" and config.model == "deit_t"


def _cli_args(data: dict[str, str], out: Path, epochs: int) -> list[str]:
    return [
        "--train",
        data["train"],
        "--val",
        data["val"],
        "--out",
        str(out),
        "--epochs",
        str(epochs),
        "--batch_size",
        "16",
        "--depth",
        "1",
        "--embed_dim",
        "32",
        "--num_heads",
        "2",
        "--device",
        "cpu",
        "--num_workers",
        "0",
        "--feature_model",
        "None",
        "--img_size",
        "None",
        "--in_chans",
        "None",
        "--grid",
        "None",
    ]


@pytest.mark.slow
def test_cli_with_config_file_and_resume(data, tmp_path):
    out = tmp_path / "cli"
    config = ROOT / "recipes" / "configs" / "demo.yaml"
    base = [sys.executable, str(SCRIPT), "--config", str(config), *_cli_args(data, out, 2)]
    proc = subprocess.run(
        [*base, "--max_steps", "6"], capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "epoch 1/2" in proc.stdout and "stopped at step 6" in proc.stdout
    proc = subprocess.run(
        [*base, "--resume"], capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (
        "resumed from" in proc.stdout
        and "epoch 2/2" in proc.stdout
        and "done: val_acc" in proc.stdout
    )
    assert len((out / LOG_NAME).read_text().splitlines()) == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_gloo(data, tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--nnodes",
        "1",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        str(SCRIPT),
        *_cli_args(data, out, 1),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (
        proc.stdout.count("epoch 1/1") == 1 and proc.stdout.count("done: val_acc") == 1
    )  # rank 0 only
    (record,) = [json.loads(line) for line in (out / LOG_NAME).read_text().splitlines()]
    assert json.loads((out / CONFIG_NAME).read_text())["resolved"]["world_size"] == 2
    assert 0.0 <= record["val_acc"] <= 1.0 and record["step"] == 3  # 96 samples / 2 ranks / 16
    assert torch.load(out / CHECKPOINT_NAME, weights_only=True)["epoch"] == 1
