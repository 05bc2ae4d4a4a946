"""The one device rule: which CUDA device a process uses, for the loader, training and extraction.

Under torchrun every process has a ``LOCAL_RANK``. Where each process sees several devices
(the usual ``torchrun --nproc-per-node N`` on one N-GPU machine) it takes
``LOCAL_RANK % device_count()``; where it sees one (``CUDA_VISIBLE_DEVICES`` set per process
by a scheduler) it takes that one, device 0. ``cuda:LOCAL_RANK`` would be an invalid ordinal
in the second case, and plain ``cuda`` puts every rank on device 0 in the first.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

__all__ = ["cuda_index", "resolve_auto", "resolve_cuda"]


def cuda_index(env: Mapping[str, str] | None = None, count: int | None = None) -> int:
    """The CUDA device index of this process.

    Args:
        env: the environment (default: ``os.environ``); only ``LOCAL_RANK`` is read.
        count: visible CUDA devices (default: ``torch.cuda.device_count()``).

    Returns:
        ``LOCAL_RANK % count`` (0 without ``LOCAL_RANK``, or with one visible device).

    Raises:
        ValueError: ``LOCAL_RANK`` is not a non-negative integer, or no device is visible.
    """
    env = os.environ if env is None else env
    if count is None:
        import torch

        count = torch.cuda.device_count()
    if count < 1:
        raise ValueError("no CUDA device is visible (torch.cuda.device_count() == 0)")
    raw = env.get("LOCAL_RANK", "0")
    try:
        rank = int(raw)
    except ValueError:
        raise ValueError(f"LOCAL_RANK={raw!r} is not an integer") from None
    if rank < 0:
        raise ValueError(f"LOCAL_RANK={raw!r} is negative")
    return rank % count


def resolve_auto(device: Any) -> Any:
    """``"auto"`` -> ``"cuda"`` where CUDA is available, else ``"cpu"``; any other as is."""
    if str(device) != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_cuda(device, env: Mapping[str, str] | None = None, count: int | None = None):
    """``device`` (a ``torch.device`` or its name) with a CUDA index filled in by
    :func:`cuda_index`; an explicit index (``cuda:1``) and non-CUDA devices are kept."""
    import torch

    dev = torch.device(device)
    if dev.type != "cuda" or dev.index is not None:
        return dev
    return torch.device("cuda", cuda_index(env, count))
