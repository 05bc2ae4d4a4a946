"""What one extraction run holds: the process group, the device, and the shared runtime objects."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from loffdata.devices import resolve_auto, resolve_cuda
from loffdata.extract.extractconfig import ExtractConfig
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
    """The rank's device: ``auto`` is CUDA where available; plain ``cuda`` follows the one
    device rule (:mod:`loffdata.devices`), so torchrun ranks spread over the GPUs."""
    kind = resolve_auto(config.device)
    return resolve_cuda(kind, env={"LOCAL_RANK": str(ctx.local_rank)})


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
