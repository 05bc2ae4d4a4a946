"""Where a run's figures go: the tqdm bar of an epoch, ``<out>/log.jsonl``, TensorBoard, the epoch
line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from loffdata.errors import LoffError

__all__ = ["EpochLog", "check_log_backend", "epoch_bar", "format_record"]

TB_DIR = "tb"
_SCALARS = ("train_loss", "val_loss", "val_acc", "lr", "samples_per_s", "wait_fraction")


def check_log_backend(kind: str) -> None:
    """Fails at setup, not after the first epoch, when ``log="tensorboard"`` cannot work.

    Raises:
        LoffError: the ``tensorboard`` package is not installed, with the command to install it.
    """
    if kind != "tensorboard":
        return
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        raise LoffError(
            "log='tensorboard' needs the tensorboard package: pip install tensorboard "
            "(or use log=jsonl, the default; <out>/log.jsonl has the same figures)"
        ) from None


class EpochLog:
    """Appends each epoch record to ``<out>/log.jsonl`` and, with ``kind="tensorboard"``, to
    TensorBoard.

    Args:
        out: the run's output directory.
        kind: ``jsonl`` or ``tensorboard``.
        main: whether this process writes (rank 0).
    """

    def __init__(self, out: Path, *, kind: str, main: bool):
        self.path, self.main, self.writer = out / "log.jsonl", main, None
        if main and kind == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(out / TB_DIR))

    def write(self, record: dict[str, Any]) -> None:
        if not self.main:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for name in _SCALARS:
                if name in record:
                    self.writer.add_scalar(name, record[name], global_step=record["step"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def epoch_bar(*, epoch: int, epochs: int, total: int, enabled: bool) -> Any:
    """A tqdm bar over the steps of one epoch (postfix: loss, samples/s, data wait)."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=f"epoch {epoch + 1}/{epochs}",
        unit="step",
        disable=not enabled,
        leave=False,
        dynamic_ncols=True,
    )


def format_record(record: dict[str, Any], epochs: int) -> str:
    """The one line printed per epoch."""
    val = (
        f"val_loss {record['val_loss']:.4f}  val_acc {record['val_acc']:.2%}  "
        if "val_acc" in record
        else ""
    )
    return (
        f"epoch {record['epoch'] + 1}/{epochs}  train_loss {record['train_loss']:.4f}  {val}"
        f"{record['samples_per_s']:,.0f} samples/s  wait {record['wait_fraction']:.0%}  "
        f"{record['time']:.1f}s"
    )
