"""One line naming the machine a benchmark ran on (for plots and tables)."""

from __future__ import annotations

import os
import platform

import torch


def machine() -> str:
    """One line naming this machine: CPUs, memory, GPU."""
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()}-core {platform.machine()}, {mem:.0f} GiB, {gpu}"
