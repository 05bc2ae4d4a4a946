"""recipes/train.py extras: the per-epoch progress bar, TensorBoard (or a clear error), hints."""

from __future__ import annotations

import importlib.util

import pytest

from loffdata.errors import LoffError
from loffdata.hints import DeviceError
from loffdata.train.trainer import train
from tests.train.test_train import _config, data  # noqa: F401  (module fixture)

HAS_TB = importlib.util.find_spec("tensorboard") is not None


def test_progress_bar_shows_samples_per_s_and_data_wait(data, tmp_path, capsys):  # noqa: F811
    train(_config(data, tmp_path / "run", epochs=1, progress=True))
    captured = capsys.readouterr()
    assert (
        "epoch 1/1" in captured.err and "samples/s" in captured.err and "data wait" in captured.err
    )
    assert "epoch 1/1  train_loss" in captured.out  # the line per epoch stays on stdout


@pytest.mark.skipif(HAS_TB, reason="tensorboard is installed")
def test_tensorboard_missing_fails_before_training(data, tmp_path):  # noqa: F811
    with pytest.raises(LoffError, match="pip install tensorboard"):
        train(_config(data, tmp_path / "run", log="tensorboard"))
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(not HAS_TB, reason="tensorboard is not installed")
def test_tensorboard_writes_event_files(data, tmp_path):  # noqa: F811
    train(_config(data, tmp_path / "run", epochs=1, log="tensorboard"))
    assert list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))


def test_too_few_steps_warns_with_what_to_do(data, tmp_path):  # noqa: F811
    from loffdata.train.run import FewStepsWarning

    with pytest.warns(
        FewStepsWarning, match=r"only 6 optimiser steps .*--probe True.*--model linear"
    ):
        train(_config(data, tmp_path / "run", epochs=1, probe=False))


def test_few_steps_with_the_probe_path_do_not_warn(data, tmp_path):  # noqa: F811
    import warnings

    from loffdata.train.run import FewStepsWarning

    with warnings.catch_warnings():  # the probe path starts as a linear probe: few steps train it
        warnings.simplefilter("error", FewStepsWarning)
        train(_config(data, tmp_path / "run", epochs=1, probe=True))


def test_parent_dataset_dir_is_answered_with_the_split(data, tmp_path):  # noqa: F811
    parent = data["train"].rsplit("/", 1)[0]
    with pytest.raises(
        LoffError, match=r"no dataset at .*\(no manifest.json\); did you mean '.*train'\?"
    ):
        train(_config(data, tmp_path / "run", train=parent))


def test_cuda_without_cuda_fails_at_setup(data, tmp_path):  # noqa: F811
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(DeviceError, match="CUDA is not available.*device='cpu'"):
        train(_config(data, tmp_path / "run", device="cuda"))
