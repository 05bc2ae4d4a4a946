"""What one extraction run holds: the process group, the device, and the shared runtime objects."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from loffdata.extract.config import ExtractConfig
from loffdata.extract.images import ImageSource
from loffdata.util import DistContext
from loffdata.util import init_distributed as util_init_distributed

__all__ = ["Dist", "Runtime", "init_distributed", "select_device"]


Dist = DistContext


def init_distributed() -> Dist:
    """The process group of a torchrun extraction (gloo: only barriers are needed, and they
    must work on CPU-only machines too), or none."""
    return util_init_distributed("gloo", timeout=timedelta(hours=24))


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
    teacher: Any = None  # loffdata.extract.teacher.Teacher
