"""Process group and device of a training run: torchrun (``WORLD_SIZE > 1``) or one process."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from loffdata.hints import check_device
from loffdata.train.trainer import TrainConfig

__all__ = ["Dist", "all_sum", "init_distributed", "resolve_device"]


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def resolve_device(config: TrainConfig) -> torch.device:
    kind = config.device
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        kind = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    device = torch.device(kind)
    if device.type == "cuda":
        check_device(device)
        torch.cuda.set_device(device)
    return device


def init_distributed(device: torch.device) -> Dist:
    """Create the process group under torchrun (``WORLD_SIZE > 1``) unless one exists."""
    if dist.is_available() and dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size())
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist()
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), owns_group=True)


def all_sum(values: list[float], device: torch.device, ctx: Dist) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if ctx.world_size > 1:
        dist.all_reduce(t)
    return t.tolist()
