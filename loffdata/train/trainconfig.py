"""What one training run is: :class:`TrainConfig`, its file names, and loading it from a file.

Light on purpose (no torch): the CLI answers ``--help`` and flag errors at once.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from loffdata import defaults
from loffdata.stream.streamconfig import StreamConfig
from loffdata.util import check_int

__all__ = [
    "CHECKPOINT_NAME",
    "CONFIG_NAME",
    "LOG_NAME",
    "RESUMABLE_CHANGES",
    "STREAM_FROM_RUN",
    "TrainConfig",
    "load_config",
]

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.jsonl"
CONFIG_NAME = "config.json"
#: ``stream`` fields a run sets from its own (``seed``, ``batch_size``): not options of their own.
STREAM_FROM_RUN = ("seed", "batch_size")
#: Fields a resumed run may change; every other field must match the checkpoint's.
RESUMABLE_CHANGES = (
    "resume",
    "max_steps",
    "num_workers",
    "progress",
    "device",
    "amp",
    "epochs",
    "log",
    "predictions",
)


@dataclass
class TrainConfig:
    """One training run (the keys of ``recipes/configs/*.yaml``, plus runtime switches).

    Attributes:
        train: train split: dataset directory or manifest URL (local, http(s)://, s3://).
        val: validation split, same forms; ``None``: no evaluation.
        num_classes: classes; ``None``: from the train manifest.
        feature_model: timm model the cache was built with; checked against the manifest's
            ``source.model`` when both are known (``None``: not checked).
        img_size: extraction resolution, checked like ``feature_model``.
        pool: extraction pooling factor, checked like ``feature_model``.
        in_chans: feature channels ``C``; ``None``: from the manifest (else checked).
        grid: feature grid ``H`` (square) ; ``None``: from the manifest (else checked).
        model: classifier kind: ``deit_s``, ``deit_t`` or ``linear``.
        depth: ViT depth; ``None``: the kind's default.
        embed_dim: ViT width; ``None``: the kind's default.
        num_heads: ViT attention heads; ``None``: the kind's default.
        norm: input normalisation: ``batch``, ``layer`` or ``none``.
        drop_path_rate: stochastic depth rate.
        probe: ViT kinds: the probe path (a linear probe on the pooled features as a second
            head, trained on its own loss; the classifier predicts with whichever head has the
            lower running training loss), so that a short run on a small cache is not worse
            than a linear probe (``ClassifierConfig.probe``); ``False``: the plain ViT (the
            paper's; better where the ViT alone learns fast).
        probe_lr_scale: the probe path's learning rate over ``lr`` (10: the guide's linear
            probe rate, 0.01, at the default ``lr``).
        augment: LoffLoader augmentation: a preset name (``loffta``, ``frofa``, ``none``)
            or a dict of ``AugmentSpec`` fields.
        num_workers: LoffLoader reader processes (0: read in the training process).
        optimizer: only ``adamw``.
        batch_size: samples per step on each rank.
        epochs: training epochs.
        lr: peak learning rate (not rescaled with the world size).
        min_lr: final learning rate of the cosine schedule.
        warmup_epochs: linear warm-up length in epochs (counted in steps).
        weight_decay: AdamW weight decay (not on biases, norms, position embedding, CLS).
        label_smoothing: cross-entropy label smoothing.
        device: ``cpu``, ``cuda`` or ``auto``; under DDP on CUDA, ``cuda:LOCAL_RANK``.
        amp: ``bf16`` (autocast, CUDA only; ignored with a warning on CPU) or ``none``.
        seed: seed of the model initialisation, data order and augmentation.
        out: output directory (``config.json``, ``log.jsonl``, ``checkpoint.pt``).
        resume: continue from ``<out>/checkpoint.pt``.
        max_steps: stop after this many optimiser steps in total (a checkpoint is written
            there, also mid-epoch); ``None``: run all epochs.
        progress: a tqdm bar per epoch (samples/s, data wait) and one line per epoch (rank 0).
        log: where epoch records go besides ``<out>/log.jsonl``: ``jsonl`` (only there) or
            ``tensorboard`` (also TensorBoard event files in ``<out>/tb``; needs the
            ``tensorboard`` package).
        stream: the rest of the data settings of both loaders (``storage_options``,
            ``cache_dir``, ``shuffle_buffer``, ``on_error``, ``retry`` ...): a
            :class:`~loffdata.stream.streamconfig.StreamConfig` or a dict of its fields. Its
            ``seed`` and ``batch_size`` are those above.
        views: augmented views per sample read (``LoaderConfig.views``); the loss is the
            mean over a sample's views, then over samples (:mod:`loffdata.train.objective`).
        distill_weight: weight ``w`` of the distillation term against the stored teacher
            logits (``(1 - w) * CE + w * KD``); ``0``: no distillation.
        temperature: distillation softmax temperature.
        multiscale: multi-scale variable-batch sampling: a dict of
            :class:`~loffdata.loader.multiscale.MultiScaleConfig` fields (its ``seed`` is
            ``seed``); ``batch_size`` is then the chunk a batch is made of; ``None``: off.
        predictions: write every ``val`` sample's ``key, label, prediction, loss`` to this
            file after each evaluation (``.csv`` or ``.jsonl``; under DDP one file per rank,
            ``name.rank<r>.suffix``); ``None``: not written.
    """

    train: str | None = None
    val: str | None = None
    num_classes: int | None = None
    feature_model: str | None = None
    img_size: int | None = None
    pool: int | None = None
    in_chans: int | None = None
    grid: int | None = None
    model: str = "deit_t"
    depth: int | None = None
    embed_dim: int | None = None
    num_heads: int | None = None
    norm: str = "batch"
    drop_path_rate: float = 0.0
    probe: bool = defaults.PROBE
    probe_lr_scale: float = defaults.PROBE_LR_SCALE
    augment: Any = "loffta"
    num_workers: int = defaults.NUM_WORKERS
    optimizer: str = "adamw"
    batch_size: int = defaults.BATCH_SIZE
    epochs: int = 5
    lr: float = 1e-3
    min_lr: float = 1e-6
    warmup_epochs: float = 1
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    device: str = defaults.DEVICE
    amp: str = "none"
    seed: int = 0
    out: str = "out/train"
    resume: bool = False
    max_steps: int | None = None
    progress: bool = True
    log: str = "jsonl"
    stream: StreamConfig = field(default_factory=StreamConfig)
    views: int = defaults.VIEWS
    distill_weight: float = 0.0
    temperature: float = 1.0
    multiscale: dict[str, Any] | None = None
    predictions: str | None = None

    def __post_init__(self) -> None:
        from loffdata.train.objective import check_objective

        check_objective(
            views=self.views, distill_weight=self.distill_weight, temperature=self.temperature
        )
        self._embed_stream()
        if not self.train:
            raise ValueError("TrainConfig.train is required: the train split's dataset dir or URL")
        if self.optimizer != "adamw":
            raise ValueError(f"optimizer must be 'adamw', got {self.optimizer!r}")
        if self.log not in ("jsonl", "tensorboard"):
            raise ValueError(f"log must be 'jsonl' or 'tensorboard', got {self.log!r}")
        if self.amp not in ("bf16", "none"):
            raise ValueError(f"amp must be 'bf16' or 'none', got {self.amp!r}")
        for name in ("batch_size", "epochs"):
            check_int(self, name, 1)
        if self.warmup_epochs < 0 or self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs must be in [0, epochs], got {self.warmup_epochs}")
        if self.predictions and not str(self.predictions).lower().endswith((".csv", ".jsonl")):
            raise ValueError(
                f"predictions must name a .csv or .jsonl file, got {self.predictions!r}"
            )
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or None, got {self.max_steps}")

    def _embed_stream(self) -> None:
        if isinstance(self.stream, Mapping):
            self.stream = StreamConfig.from_dict(self.stream)
        if not isinstance(self.stream, StreamConfig):
            raise TypeError(
                "stream must be a StreamConfig or a dict of its fields, not "
                f"{type(self.stream).__name__}"
            )
        self.stream = dataclasses.replace(
            self.stream, **{k: getattr(self, k) for k in STREAM_FROM_RUN}
        )


def load_config(path: str | os.PathLike | None = None, **overrides: Any) -> TrainConfig:
    """Read a flat YAML or JSON config file and apply keyword overrides (CLI flags).

    Raises:
        ValueError: a key that is not a :class:`TrainConfig` field (named with its file), or a
            file that is missing or not a mapping.
    """
    from loffdata.cli.parse import load_config_file, suggest

    values: dict[str, Any] = load_config_file(path) if path is not None else {}
    known = [f.name for f in dataclasses.fields(TrainConfig)]
    for where, keys in ((path, values), ("overrides", overrides)):
        unknown = sorted(set(keys) - set(known))
        if unknown:
            raise ValueError(
                f"{where}: unknown config key {unknown[0]!r}{suggest(unknown[0], known, prefix='')}"
                f"; known: {', '.join(known)}"
            )
    return TrainConfig(**{**values, **overrides})
