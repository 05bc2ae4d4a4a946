"""``loffdata doctor``: the versions that matter for the GPU path, and what ``auto`` picks.

::

    $ loffdata doctor
    torch        2.14.1+cu130 (CUDA 13.0)
    CUDA device  none (torch.cuda.is_available() is False)
    DALI         2.4.0 (wheels: nvidia-dali-cuda120 2.4.0)
    augment      backend='auto' picks torch: no CUDA device (on the CPU the torch backend is the
    faster one)
    transfer     'auto' picks none
    PROBLEM      nvidia-dali-cuda120 is built for CUDA 12, torch for CUDA 13: install
    nvidia-dali-cuda130 instead

:func:`environment` returns the same facts as a dict (``benchmarks/gpu_check.py`` writes it
next to its figures).
"""

from __future__ import annotations

import importlib.metadata as md
import re
import shutil
import subprocess
from typing import Any

__all__ = ["environment", "report", "dali_wheels", "pick_backend"]


def dali_wheels() -> dict[str, str]:
    """Installed DALI distributions, ``{"nvidia-dali-cuda120": "2.4.0", ...}``."""
    found = {}
    for dist in md.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name.startswith("nvidia-dali-cuda"):
            found[name] = dist.version
    return dict(sorted(found.items()))


def _wheel_cuda_major(name: str) -> int | None:
    m = re.fullmatch(r"nvidia-dali-cuda(\d+)0", name)
    return int(m.group(1)) if m else None


def pick_backend(cuda: bool, dali: bool) -> tuple[str, str]:
    """What ``backend="auto"`` picks for a CUDA device, and why (the rule of
    :func:`loffdata.augment.augmenter.resolve_backend`)."""
    if not cuda:
        return "torch", "no CUDA device (on the CPU the torch backend is the faster one)"
    if not dali:
        return (
            "torch",
            "DALI is not installed (pip install the nvidia-dali wheel matching torch's CUDA)",
        )
    return "dali", "CUDA device and DALI both present"


def _driver() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (
        out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    )


def environment() -> dict[str, Any]:
    """Versions and choices as a plain dict (JSON-ready)."""
    import torch

    from loffdata.augment.dali_backend import dali_available
    from loffdata.loader.transfer import select_transfer

    cuda = torch.cuda.is_available()
    wheels = dali_wheels()
    dali = dali_available()
    env: dict[str, Any] = {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": cuda,
        "device": torch.cuda.get_device_name() if cuda else None,
        "device_count": torch.cuda.device_count() if cuda else 0,
        "driver": _driver() if cuda else None,
        "dali_wheels": wheels,
        "dali": _dali_version() if dali else None,
    }
    env["backend_auto"], env["backend_reason"] = pick_backend(cuda, dali)
    env["transfer_auto"] = select_transfer(torch.device("cuda" if cuda else "cpu"))
    env["problems"] = _problems(env)
    env["notes"] = _notes(env)
    return env


def _dali_version() -> str | None:
    try:
        import nvidia.dali as dali
    except ImportError:
        return None
    return dali.__version__


def _problems(env: dict[str, Any]) -> list[str]:
    """Mismatches that break or slow the GPU path."""
    out = []
    majors = {name: _wheel_cuda_major(name) for name in env["dali_wheels"]}
    if len(majors) > 1:
        out.append(
            f"several DALI wheels installed ({', '.join(majors)}): they overwrite each other's "
            "nvidia/dali; keep only the one matching torch's CUDA"
        )
    return out + ([] if env.get("cuda_available") is False else _cuda_mismatches(env))


def _cuda_mismatches(env: dict[str, Any]) -> list[str]:
    """DALI wheels built for another CUDA major than torch: they break the GPU path only."""
    torch_major = int(env["torch_cuda"].split(".")[0]) if env["torch_cuda"] else None
    out = []
    for name in env["dali_wheels"]:
        major = _wheel_cuda_major(name)
        if torch_major is not None and major is not None and major != torch_major:
            out.append(
                f"{name} is built for CUDA {major}, torch for CUDA {torch_major}: "
                f"install nvidia-dali-cuda{torch_major}0 instead"
            )
    return out


def _notes(env: dict[str, Any]) -> list[str]:
    """What matters only on a GPU machine, said as such where there is no CUDA device."""
    if env.get("cuda_available") is not False:
        return []
    return [
        f"{text.split(': install')[0]}; harmless here (no CUDA device: DALI runs CPU-only, and "
        f"the torch backend is picked); on a GPU machine{text.split(':', 1)[1]}"
        for text in _cuda_mismatches(env)
    ]


def report(env: dict[str, Any] | None = None) -> str:
    """The human-readable report of :func:`environment`."""
    env = environment() if env is None else env
    wheels = ", ".join(f"{k} {v}" for k, v in env["dali_wheels"].items()) or "none installed"
    device = env["device"] or "none (torch.cuda.is_available() is False)"
    if env["device"] and env["driver"]:
        device += f", driver {env['driver']}"
    lines = [
        f"torch        {env['torch']} (CUDA {env['torch_cuda'] or 'none: CPU build'})",
        f"CUDA device  {device}",
        f"DALI         {env['dali'] or 'not importable'} (wheels: {wheels})",
        f"augment      backend='auto' picks {env['backend_auto']}: {env['backend_reason']}",
        f"transfer     'auto' picks {env['transfer_auto']}",
    ]
    lines += [f"PROBLEM      {p}" for p in env["problems"]]
    lines += [f"NOTE         {n}" for n in env.get("notes", [])]
    if not env["problems"]:
        lines.append(
            "OK           no version mismatch found"
            if not env.get("notes")
            else "OK           nothing that breaks on this machine (see the notes)"
        )
    return "\n".join(lines)
