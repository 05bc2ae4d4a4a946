"""The LOFF-TA training recipe: its configuration, and ``train(config) -> results``.

``recipes/train.py`` is its CLI (every flag is a :class:`TrainConfig` field). The run itself
lives in the modules of the flow, imported only when training starts (this module stays
light, so the CLI answers ``--help`` and flag errors at once)::

    dist.py        process group (torchrun) and device
    run.py         setup: loaders, classifier, optimiser, <out>/config.json
    loop.py        steps, epochs, evaluation, progress bar
    metrics.py     log.jsonl, TensorBoard, the epoch line
    checkpoint.py  <out>/checkpoint.pt, written atomically, loaded with weights_only=True

Resumption (``resume=True``) restores model, optimiser, step, epoch, torch RNG state and,
for a checkpoint written mid-epoch (``max_steps``), the loader position, so a resumed run
ends with exactly the weights of an uninterrupted one. Under ``torchrun`` (``WORLD_SIZE >
1``) a process group is created (gloo on CPU, nccl on CUDA), the model is wrapped in DDP
and only rank 0 writes files or prints.
"""

from __future__ import annotations

from typing import Any

from loffdata.train.trainconfig import (
    CHECKPOINT_NAME,
    CONFIG_NAME,
    LOG_NAME,
    RESUMABLE_CHANGES,
    TrainConfig,
    load_config,
)

__all__ = [
    "CHECKPOINT_NAME",
    "CONFIG_NAME",
    "LOG_NAME",
    "RESUMABLE_CHANGES",
    "TrainConfig",
    "load_config",
    "train",
]


def train(config: TrainConfig) -> dict[str, Any]:
    """Train (or resume) one run; see the module docstring.

    Returns:
        ``{"history": [per-epoch records], "final": last record or None, "completed":
        all epochs done, "step": optimiser steps, "params": parameter count, "wall_s":
        seconds of this call, "out": output directory, "rank": this process's rank}`` (on
        every rank).
    """
    from loffdata.train.loop import run_training  # torch and the loader load only now

    return run_training(config)
