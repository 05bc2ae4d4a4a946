"""Checkpoints of a training run: written atomically, read back with ``weights_only=True``.

A checkpoint holds only tensors, numbers, strings, lists and dicts (model and optimiser
state dicts, progress, the loader position, RNG states and the config as a dict), so it
loads without unpickling any object: a crafted file cannot run code.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from loffdata import util
from loffdata.errors import LoffError
from loffdata.redact import redact
from loffdata.train.trainconfig import CHECKPOINT_NAME, RESUMABLE_CHANGES, TrainConfig

__all__ = [
    "NoCheckpointError",
    "Progress",
    "ResumeError",
    "load_checkpoint",
    "resume",
    "save_checkpoint",
    "write_json",
]


@dataclass
class Progress:
    """Where the run is: the part of the checkpoint that is not a module's state."""

    step: int = 0
    epoch: int = 0  # current epoch (the next one to run at an epoch boundary)
    loss_sum: float = 0.0  # running train-loss sum of the current epoch on this rank
    loss_n: float = 0.0
    mid_epoch: bool = False  # resumed from a mid-epoch checkpoint: the loader holds the position
    history: list[dict[str, Any]] = field(default_factory=list)


class ResumeError(LoffError, ValueError):
    """A resume asked with settings other than the checkpoint's."""


class NoCheckpointError(LoffError, FileNotFoundError):
    """A resume asked where there is no checkpoint."""


def write_json(path: Path, obj: Any) -> None:
    """Atomic (see :func:`loffdata.util.write_json`); values JSON lacks are written as text."""
    util.write_json(path, obj, indent=2, default=str)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def save_checkpoint(run: Any, *, loader_state: dict[str, Any] | None) -> None:
    """Write ``checkpoint.pt`` atomically (rank 0): a temporary file, then a rename."""
    if not run.ctx.main:
        return
    p = run.progress
    payload = {
        "version": 1,
        "config": redact(dataclasses.asdict(run.config)),
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "step": p.step,
        "epoch": p.epoch,
        "loss_sum": p.loss_sum,
        "loss_n": p.loss_n,
        "history": p.history,
        "loader": loader_state,
        "rng": _rng_state(),
    }
    path = run.out / CHECKPOINT_NAME
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, *, map_location: Any = "cpu") -> dict[str, Any]:
    """Reads a checkpoint with ``torch.load(weights_only=True)``: tensors and plain containers only.

    Raises:
        LoffError: the file holds anything else (a pickled object, which could run code); nothing
            in it is executed.
    """
    import pickle

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[-1][:200]
        raise LoffError(
            f"{path}: refused to load: the checkpoint holds objects other than tensors and plain "
            f"containers (loaded with weights_only=True, nothing in it was run). It was not "
            f"written by loffdata, or it was tampered with; delete it or resume from another "
            f"--out ({first})"
        ) from None


def _check_resumable(config: TrainConfig, saved: dict[str, Any]) -> None:
    now = redact(dataclasses.asdict(config))  # the checkpoint holds the redacted config
    diff = sorted(k for k, v in now.items() if k not in RESUMABLE_CHANGES and saved.get(k, v) != v)
    if diff:
        detail = ", ".join(f"{k}: {saved[k]!r} -> {now[k]!r}" for k in diff)
        raise ResumeError(
            f"cannot resume: the config differs from the checkpoint's ({detail}); "
            "resume with the same settings, or start a fresh run in another --out"
        )


def resume(run: Any) -> None:
    path = run.out / CHECKPOINT_NAME
    if not path.exists():
        raise NoCheckpointError(f"resume=True but there is no checkpoint at {path}")
    ckpt = load_checkpoint(path, map_location=run.device)
    _check_resumable(run.config, ckpt["config"])
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.progress = Progress(
        step=ckpt["step"],
        epoch=ckpt["epoch"],
        loss_sum=ckpt["loss_sum"],
        loss_n=ckpt["loss_n"],
        mid_epoch=ckpt["loader"] is not None,
        history=list(ckpt["history"]),
    )
    torch.set_rng_state(ckpt["rng"]["torch"].cpu())
    if "cuda" in ckpt["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in ckpt["rng"]["cuda"]])
    if ckpt["loader"] is not None:
        run.train_loader.load_state_dict(ckpt["loader"])
    run.log(f"resumed from {path}: epoch {run.progress.epoch + 1}, step {run.progress.step}")
