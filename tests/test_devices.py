"""The one device rule (loffdata/devices.py) and its three users: loader, training, extraction."""

from __future__ import annotations

import types

import pytest
import torch

from loffdata.devices import cuda_index, resolve_cuda
from loffdata.util import DistContext


@pytest.mark.parametrize(
    ("local_rank", "count", "want"),
    [
        (None, 1, 0),
        ("0", 1, 0),
        ("3", 1, 0),  # one visible device (CUDA_VISIBLE_DEVICES per rank): that one
        ("3", 8, 3),
        ("5", 4, 1),
        (None, 4, 0),  # several: LOCAL_RANK % device_count()
    ],
)
def test_cuda_index_rule(local_rank, count, want):
    env = {} if local_rank is None else {"LOCAL_RANK": local_rank}
    assert cuda_index(env, count) == want


def test_cuda_index_refuses_nonsense():
    with pytest.raises(ValueError, match="no CUDA device"):
        cuda_index({}, 0)
    with pytest.raises(ValueError, match="not an integer"):
        cuda_index({"LOCAL_RANK": "one"}, 2)
    with pytest.raises(ValueError, match="negative"):
        cuda_index({"LOCAL_RANK": "-1"}, 2)


def test_explicit_index_and_cpu_are_kept():
    assert resolve_cuda("cuda:1", {"LOCAL_RANK": "3"}, 4) == torch.device("cuda", 1)
    assert resolve_cuda("cpu", {"LOCAL_RANK": "3"}, 4) == torch.device("cpu")
    assert resolve_cuda("cuda", {"LOCAL_RANK": "3"}, 1) == torch.device(
        "cuda", 0
    )  # not the invalid cuda:3


@pytest.fixture
def two_gpus(monkeypatch):
    """CUDA patched in: 2 visible devices (nothing is launched on them)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: None)
    monkeypatch.setenv("LOCAL_RANK", "3")


def test_loader_training_and_extraction_use_the_rule(two_gpus):
    from loffdata.extract.runtime import select_device
    from loffdata.loader.device import CudaGpu, as_gpu
    from loffdata.train.dist import resolve_device

    gpu = as_gpu("cuda")
    assert isinstance(gpu, CudaGpu) and gpu.compute == torch.device("cuda", 1)
    assert resolve_device(types.SimpleNamespace(device="cuda")) == torch.device("cuda", 1)
    assert resolve_device(types.SimpleNamespace(device="auto")) == torch.device("cuda", 1)
    for device in (
        "cuda",
        "auto",
    ):  # --device cuda under torchrun no longer puts every rank on GPU 0
        cfg = types.SimpleNamespace(device=device)
        assert select_device(cfg, DistContext(rank=3, world_size=4, local_rank=3)) == torch.device(
            "cuda", 1
        )
        assert select_device(cfg, DistContext(rank=0, world_size=4, local_rank=0)) == torch.device(
            "cuda", 0
        )
