"""What one extraction run holds: the process group, the device, and the shared runtime objects."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from loffdata.extract.config import ExtractConfig
from loffdata.extract.images import ImageSource

__all__ = ["Dist", "Runtime", "init_distributed", "select_device"]


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    def barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()


def init_distributed() -> Dist:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    # gloo: only barriers are needed, and they must work on CPU-only machines too
    dist.init_process_group("gloo", timeout=timedelta(hours=24))
    return Dist(dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", 0)), owns_group=True)


def select_device(config: ExtractConfig, ctx: Dist) -> torch.device:
    if config.device != "auto":
        return torch.device(config.device)
    if torch.cuda.is_available():
        return torch.device("cuda", ctx.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


@dataclass
class Runtime:
    """Objects shared by all splits of one run."""

    config: ExtractConfig
    source: ImageSource
    model: torch.nn.Module
    transform: Callable
    device: torch.device
    ctx: Dist
    fs: Any
    root: str
    data_cfg: dict[str, Any]
    weights: str = ""  # sha256 of the model's state dict (model.weights_sha256)
