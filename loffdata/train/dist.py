"""Process group and device of a training run: torchrun (``WORLD_SIZE > 1``) or one process."""

from __future__ import annotations

import torch
import torch.distributed as dist

from loffdata.devices import resolve_auto, resolve_cuda
from loffdata.hints import check_device
from loffdata.train.trainconfig import TrainConfig
from loffdata.util import DistContext
from loffdata.util import init_distributed as util_init_distributed

__all__ = ["Dist", "all_sum", "init_distributed", "resolve_device"]


Dist = DistContext


def resolve_device(config: TrainConfig) -> torch.device:
    """The run's device; plain ``cuda`` by the one device rule (:mod:`loffdata.devices`:
    ``LOCAL_RANK % device_count()``), made the current device."""
    kind = resolve_auto(config.device)
    check_device(kind)  # a clear error where CUDA is missing, before an index is chosen
    device = resolve_cuda(kind)
    if device.type == "cuda":
        check_device(device)
        torch.cuda.set_device(device)
    return device


def init_distributed(device: torch.device) -> Dist:
    """Create the process group under torchrun (``WORLD_SIZE > 1``) unless one exists."""
    return util_init_distributed("nccl" if device.type == "cuda" else "gloo")


def all_sum(values: list[float], device: torch.device, ctx: Dist) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if ctx.world_size > 1:
        dist.all_reduce(t)
    return t.tolist()
