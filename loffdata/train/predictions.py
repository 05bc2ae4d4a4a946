"""Per-sample predictions: ``key, label, prediction, loss`` rows, written as CSV or JSONL.

Batches say which samples they hold (their keys), so a model's outputs map back to
samples: evaluation, error analysis, pseudo-labels. :class:`PredictionsFile` takes keys,
labels and logits batch by batch (:meth:`~PredictionsFile.add`) and writes the file
atomically (:meth:`~PredictionsFile.write`): a temporary file, then a rename. The format
follows the suffix: ``.csv`` (a header line, then one line a sample) or ``.jsonl`` (one
JSON object a sample). Under DDP every rank holds its own part of the samples; each writes
its own file (:func:`rank_path`), and ``partial="pad"`` may repeat up to ``world - 1``
samples once (the same key twice).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = ["FORMATS", "PredictionsFile", "prediction_rows", "rank_path"]

FORMATS = (".csv", ".jsonl")
COLUMNS = ("key", "label", "prediction", "loss")


def _format(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"predictions file {str(path)!r}: the name must end in .csv or .jsonl")
    return suffix


def rank_path(path: str | os.PathLike, rank: int, world_size: int) -> Path:
    """``path`` itself for a single process, ``name.rank<r>.suffix`` on rank ``r`` of several."""
    p = Path(path)
    return p if world_size <= 1 else p.with_name(f"{p.stem}.rank{rank}{p.suffix}")


def prediction_rows(keys: Sequence[str], labels: torch.Tensor, logits: torch.Tensor) -> list[dict]:
    """One row per sample: its key, label, predicted class (argmax) and cross-entropy loss.

    Raises:
        ValueError: if keys, labels and logits do not describe the same samples.
    """
    if not (len(keys) == labels.shape[0] == logits.shape[0]):
        raise ValueError(
            f"{len(keys)} keys, {labels.shape[0]} labels and {logits.shape[0]} rows of logits: "
            "they must describe the same samples"
        )
    logits = logits.detach().float().cpu()
    labels = labels.detach().cpu().long()
    loss = F.cross_entropy(logits, labels.clamp(min=0), reduction="none")
    pred = logits.argmax(dim=1)
    return [
        {"key": k, "label": int(y), "prediction": int(p), "loss": float(v)}
        for k, y, p, v in zip(keys, labels.tolist(), pred.tolist(), loss.tolist())
    ]


class PredictionsFile:
    """Collects per-sample predictions; :meth:`write` writes them to ``path`` (CSV or JSONL).

    Args:
        path: the file; its suffix (``.csv`` or ``.jsonl``) picks the format.
    """

    def __init__(self, path: str | os.PathLike):
        self.path, self.kind = Path(path), _format(path)
        self.rows: list[dict] = []

    def add(self, keys: Sequence[str], labels: torch.Tensor, logits: torch.Tensor) -> None:
        """Adds one batch: the samples' keys, labels and the model's logits."""
        self.rows += prediction_rows(keys, labels, logits)

    def text(self) -> str:
        """The file's contents."""
        if self.kind == ".jsonl":
            return "".join(json.dumps(r) + "\n" for r in self.rows)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({**r, "loss": repr(r["loss"])} for r in self.rows)
        return buf.getvalue()

    def write(self) -> Path:
        """Writes the rows (atomically: a temporary file, then a rename); returns the path."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
        tmp.write_text(self.text(), encoding="utf-8")
        os.replace(tmp, self.path)
        return self.path
