"""The LOFF-TA training recipe: a classifier trained on a cached feature set with LoffLoader.

One run is ``train(TrainConfig(...)) -> results``; ``recipes/train.py`` is its fire CLI.

Per epoch: ``LoffLoader(train, augment=...)`` -> classifier -> :func:`loss_fn` -> AdamW with
a per-step linear warm-up + cosine learning rate (:func:`lr_at`), then an evaluation pass
over ``val`` (no augmentation, no shuffle; loss and top-1 accuracy summed over all ranks),
one JSON line in ``<out>/log.jsonl`` and an atomic checkpoint ``<out>/checkpoint.pt``.

Resumption (``resume=True``) restores model, optimiser, step, epoch, torch RNG state and,
for a checkpoint written mid-epoch (``max_steps``), the loader position, so a resumed run
ends with exactly the weights of an uninterrupted one. Under ``torchrun`` (``WORLD_SIZE >
1``) a process group is created (gloo on CPU, nccl on CUDA), the model is wrapped in DDP
and only rank 0 writes files or prints.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml
from torch import nn

from loffdata.config import LoaderConfig
from loffdata.format.manifest import Manifest
from loffdata.loader import LoffLoader
from loffdata.stream.config import StreamConfig
from loffdata.stream.multiscale import MultiScaleConfig, MultiScaleLoader
from loffdata.train.models import create_classifier
from loffdata.train.objective import check_objective, recipe_loss
from loffdata.train.utils import create_optimizer, loss_fn, lr_at
from loffdata.util import DistContext, init_distributed, write_json

__all__ = [
    "CHECKPOINT_NAME",
    "CONFIG_NAME",
    "LOG_NAME",
    "TrainConfig",
    "evaluate",
    "load_config",
    "train",
]

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.jsonl"
CONFIG_NAME = "config.json"
#: Fields a resumed run may change; every other field must match the checkpoint's.
RESUMABLE_CHANGES = ("resume", "max_steps", "num_workers", "progress", "device", "amp", "epochs")


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
        depth: ViT depth; ``None``: the kind's default. Same for ``embed_dim``, ``num_heads``.
        norm: input normalisation: ``batch``, ``layer`` or ``none``.
        drop_path_rate: stochastic depth rate.
        augment: LoffLoader augmentation: a preset name (``loffta``, ``frofa``, ``none``)
            or a dict of ``AugmentSpec`` fields.
        num_workers: LoffLoader reader processes (0: read in the training process).
        optimizer: only ``adamw``.
        batch_size: samples per step on each rank.
        epochs: training epochs.
        lr: peak learning rate (not rescaled with the world size); ``min_lr``: final one.
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
        progress: print one line per epoch (rank 0).
        stream: the rest of the data settings of both loaders (``storage_options``,
            ``cache_dir``, ``shuffle_buffer``, ``on_error``, ``retry`` ...): a
            :class:`~loffdata.stream.config.StreamConfig` or a dict of its fields. Its
            ``seed`` and ``batch_size`` are those above.
        views: augmented views per sample read (``LoaderConfig.views``); the loss is the
            mean over a sample's views, then over samples (:mod:`loffdata.train.objective`).
        distill_weight: weight ``w`` of the distillation term against the stored teacher
            logits (``(1 - w) * CE + w * KD``); ``0``: no distillation.
        temperature: distillation softmax temperature.
        multiscale: multi-scale variable-batch sampling: a dict of
            :class:`~loffdata.stream.multiscale.MultiScaleConfig` fields (its ``seed`` is
            ``seed``); ``batch_size`` is then the chunk a batch is made of; ``None``: off.
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
    augment: Any = "loffta"
    num_workers: int = 0
    optimizer: str = "adamw"
    batch_size: int = 64
    epochs: int = 5
    lr: float = 1e-3
    min_lr: float = 1e-6
    warmup_epochs: float = 1
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    device: str = "auto"
    amp: str = "none"
    seed: int = 0
    out: str = "out/train"
    resume: bool = False
    max_steps: int | None = None
    progress: bool = True
    stream: StreamConfig = field(default_factory=StreamConfig)
    views: int = 1
    distill_weight: float = 0.0
    temperature: float = 1.0
    multiscale: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        check_objective(views=self.views, distill_weight=self.distill_weight, temperature=self.temperature)
        if isinstance(self.stream, Mapping):
            self.stream = StreamConfig.from_dict(self.stream)
        if not isinstance(self.stream, StreamConfig):
            raise TypeError(f"stream must be a StreamConfig or a dict of its fields, not {type(self.stream).__name__}")
        self.stream = dataclasses.replace(self.stream, seed=self.seed, batch_size=self.batch_size)
        if not self.train:
            raise ValueError("TrainConfig.train is required: the train split's dataset dir or URL")
        if self.optimizer != "adamw":
            raise ValueError(f"optimizer must be 'adamw', got {self.optimizer!r}")
        if self.amp not in ("bf16", "none"):
            raise ValueError(f"amp must be 'bf16' or 'none', got {self.amp!r}")
        for name in ("batch_size", "epochs"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if self.warmup_epochs < 0 or self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs must be in [0, epochs], got {self.warmup_epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or None, got {self.max_steps}")


def load_config(path: str | os.PathLike | None = None, **overrides: Any) -> TrainConfig:
    """Read a flat YAML config and apply keyword overrides (CLI flags).

    Raises:
        ValueError: a key that is not a :class:`TrainConfig` field.
    """
    values: dict[str, Any] = {}
    if path is not None:
        values = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a mapping of config keys, got {type(values).__name__}")
    values.update(overrides)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown} (in {path or 'overrides'}); known: {sorted(known)}")
    return TrainConfig(**values)


# --- distributed and device ------------------------------------------------------------------


_Dist = DistContext


def _resolve_device(config: TrainConfig) -> torch.device:
    kind = config.device
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        kind = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    device = torch.device(kind)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {config.device!r} asked for, but CUDA is not available")
        torch.cuda.set_device(device)
    return device


def _init_distributed(device: torch.device) -> _Dist:
    """Create the process group under torchrun (``WORLD_SIZE > 1``) unless one exists."""
    return init_distributed("nccl" if device.type == "cuda" else "gloo")


def _all_sum(values: list[float], device: torch.device, ctx: _Dist) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if ctx.world_size > 1:
        dist.all_reduce(t)
    return t.tolist()


# --- data and model --------------------------------------------------------------------------


def _check_features(config: TrainConfig, manifest: Manifest | None) -> dict[str, int]:
    """Resolve ``in_chans``, ``grid``, ``num_classes`` from the manifest and check the rest."""
    if manifest is None:
        missing = [k for k in ("in_chans", "grid", "num_classes") if getattr(config, k) is None]
        if missing:
            raise ValueError(f"{config.train}: no manifest, so {missing} must be set in the config")
        return {"in_chans": config.in_chans, "grid": config.grid, "num_classes": config.num_classes}
    c, h, w = manifest.features.shape
    found = {"in_chans": c, "grid": h, "num_classes": manifest.num_classes}
    found.update({k: manifest.source.get(s) for k, s in
                  (("feature_model", "model"), ("img_size", "img_size"), ("pool", "pool"))})
    bad = {k: (getattr(config, k), v) for k, v in found.items()
           if getattr(config, k) is not None and v is not None and getattr(config, k) != v}
    if bad or h != w:
        detail = ", ".join(f"{k}: config {a!r} vs manifest {b!r}" for k, (a, b) in bad.items())
        raise ValueError(f"{config.train}: config does not match the feature cache ({detail or f'grid {h}x{w} is not square'})")
    resolved = {k: getattr(config, k) if getattr(config, k) is not None else found[k]
                for k in ("in_chans", "grid", "num_classes")}
    if resolved["num_classes"] is None:
        raise ValueError(f"{config.train}: the manifest has no classes; set num_classes")
    return resolved


def _loaders(config: TrainConfig, device: torch.device) -> tuple[LoffLoader, LoffLoader | None]:
    common = LoaderConfig(stream=config.stream, device=str(device), num_workers=config.num_workers)
    train = LoffLoader(config.train, common.replace(views=config.views, return_extras=config.distill_weight > 0),
                       augment=config.augment)
    if config.multiscale:
        train = MultiScaleLoader(train, MultiScaleConfig(**{**config.multiscale, "seed": config.seed}))
    val = LoffLoader(config.val, common, augment=None, shuffle=False) if config.val else None
    return train, val


def _model(config: TrainConfig, shape: dict[str, int]) -> nn.Module:
    overrides = {k: getattr(config, k) for k in ("depth", "embed_dim", "num_heads")
                 if getattr(config, k) is not None and config.model != "linear"}
    if config.model != "linear":
        overrides["drop_path_rate"] = config.drop_path_rate
    torch.manual_seed(config.seed)
    return create_classifier(config.model, norm=config.norm, **shape, **overrides)


# --- the run ----------------------------------------------------------------------------------


@dataclass
class _Progress:
    """Where the run is: the part of the checkpoint that is not a module's state."""

    step: int = 0
    epoch: int = 0  # current epoch (the next one to run at an epoch boundary)
    loss_sum: float = 0.0  # running train-loss sum of the current epoch on this rank
    loss_n: float = 0.0
    mid_epoch: bool = False  # resumed from a mid-epoch checkpoint: the loader holds the position
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Run:
    config: TrainConfig
    ctx: _Dist
    device: torch.device
    model: nn.Module  # unwrapped
    net: nn.Module  # DDP-wrapped under torchrun, else ``model``
    optimizer: torch.optim.Optimizer
    train_loader: LoffLoader
    val_loader: LoffLoader | None
    progress: _Progress
    out: Path

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_loader)

    def autocast(self) -> Any:
        if self.config.amp == "bf16" and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def log(self, message: str) -> None:
        if self.ctx.main and self.config.progress:
            print(message, flush=True)


def _setup(config: TrainConfig) -> _Run:
    device = _resolve_device(config)
    ctx = _init_distributed(device)
    if config.amp == "bf16" and device.type != "cuda":
        warnings.warn("amp='bf16' is used on CUDA only; training in float32 on the CPU", stacklevel=3)
    train_loader, val_loader = _loaders(config, device)
    shape = _check_features(config, train_loader.manifest)
    model = _model(config, shape).to(device)
    net = model
    if ctx.world_size > 1:
        ids = [device.index] if device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    optimizer = create_optimizer(model, lr=config.lr, weight_decay=config.weight_decay)
    run = _Run(config, ctx, device, model, net, optimizer, train_loader, val_loader, _Progress(), Path(config.out))
    if ctx.main:
        run.out.mkdir(parents=True, exist_ok=True)
        if not config.resume:  # a fresh run starts a fresh log
            (run.out / LOG_NAME).unlink(missing_ok=True)
        _write_json(run.out / CONFIG_NAME, {**dataclasses.asdict(config), "resolved": {
            **shape, "device": str(device), "world_size": ctx.world_size,
            "steps_per_epoch": run.steps_per_epoch, "params": _count(model),
            "augment": None if train_loader.spec is None else train_loader.spec.to_dict(),
            "similarity_search": train_loader.similarity_search}})
    return run


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _set_lr(run: _Run) -> None:
    steps, c = run.steps_per_epoch, run.config
    total = c.epochs * steps
    warmup = min(total, round(c.warmup_epochs * steps))
    lr = lr_at(run.progress.step, total=total, warmup=warmup, base_lr=c.lr, min_lr=c.min_lr)
    for group in run.optimizer.param_groups:
        group["lr"] = lr


def _train_step(run: _Run, features: torch.Tensor, labels: torch.Tensor, extras: Any = None) -> None:
    _set_lr(run)
    c = run.config
    with run.autocast():
        loss = recipe_loss(run.net(features), labels, extras, views=c.views, label_smoothing=c.label_smoothing,
                           distill_weight=c.distill_weight, temperature=c.temperature)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    n = features.shape[0]
    run.progress.step += 1
    run.progress.loss_sum += loss.item() * n
    run.progress.loss_n += n


def _stop_requested(run: _Run) -> bool:
    return run.config.max_steps is not None and run.progress.step >= run.config.max_steps


def _train_epoch(run: _Run) -> tuple[bool, float]:
    """Train the rest of the current epoch; return (completed, training seconds)."""
    run.net.train()
    start = time.perf_counter()
    for batch in run.train_loader:
        _train_step(run, *batch)
        if _stop_requested(run) and run.train_loader.state_dict()["position"] < len(run.train_loader):
            return False, time.perf_counter() - start
    return True, time.perf_counter() - start


@torch.no_grad()
def evaluate(model: nn.Module, loader: LoffLoader, *, device: torch.device, autocast: Any = None,
             world_size: int = 1) -> dict[str, float]:
    """Mean cross-entropy and top-1 accuracy of ``model`` over one pass of ``loader``.

    Under DDP the sums are all-reduced, so every rank returns the global figures (the
    loader's ``partial="pad"`` policy may count up to ``world_size - 1`` samples twice).

    Returns:
        ``{"val_loss": ..., "val_acc": ..., "val_samples": ...}``.
    """
    was_training = model.training
    model.eval()
    loss_sum = correct = count = 0.0
    for features, labels in loader:
        with autocast or nullcontext():
            logits = model(features)
        loss_sum += loss_fn(logits, labels).item() * labels.shape[0]
        correct += (logits.argmax(dim=1) == labels).sum().item()
        count += labels.shape[0]
    model.train(was_training)
    loss_sum, correct, count = _all_sum([loss_sum, correct, count], device, _Dist(world_size=world_size))
    return {"val_loss": loss_sum / max(count, 1), "val_acc": correct / max(count, 1), "val_samples": int(count)}


def _epoch_record(run: _Run, train_s: float, wall_s: float) -> dict[str, Any]:
    p, stats = run.progress, run.train_loader.stats
    loss_sum, loss_n = _all_sum([p.loss_sum, p.loss_n], run.device, run.ctx)
    record = {"epoch": p.epoch, "step": p.step, "train_loss": loss_sum / max(loss_n, 1),
              "lr": run.optimizer.param_groups[0]["lr"]}
    if run.val_loader is not None:
        run.val_loader.set_epoch(0)
        metrics = evaluate(run.model, run.val_loader, device=run.device, autocast=run.autocast(),
                           world_size=run.ctx.world_size)
        record.update(val_loss=metrics["val_loss"], val_acc=metrics["val_acc"])
    samples = stats.samples * run.ctx.world_size
    record.update(samples_per_s=samples / max(train_s, 1e-9), wait_fraction=stats.wait_fraction,
                  train_time=train_s, time=time.perf_counter() - wall_s)
    return record


def _format(record: dict[str, Any], epochs: int) -> str:
    val = (f"val_loss {record['val_loss']:.4f}  val_acc {record['val_acc']:.2%}  "
           if "val_acc" in record else "")
    return (f"epoch {record['epoch'] + 1}/{epochs}  train_loss {record['train_loss']:.4f}  {val}"
            f"{record['samples_per_s']:,.0f} samples/s  wait {record['wait_fraction']:.0%}  "
            f"{record['time']:.1f}s")


def _finish_epoch(run: _Run, train_s: float, started: float) -> dict[str, Any]:
    record = _epoch_record(run, train_s, started)
    p = run.progress
    p.history.append(record)
    p.epoch, p.loss_sum, p.loss_n = p.epoch + 1, 0.0, 0.0
    if run.ctx.main:
        with open(run.out / LOG_NAME, "a") as f:
            f.write(json.dumps(record) + "\n")
    run.log(_format(record, run.config.epochs))
    _save_checkpoint(run, loader_state=None)
    return record


# --- checkpoints -----------------------------------------------------------------------------


def _write_json(path: Path, obj: Any) -> None:
    write_json(path, obj, indent=2, default=str)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _save_checkpoint(run: _Run, *, loader_state: dict[str, Any] | None) -> None:
    """Write ``checkpoint.pt`` atomically (rank 0): a temporary file, then a rename."""
    if not run.ctx.main:
        return
    p = run.progress
    payload = {
        "version": 1, "config": dataclasses.asdict(run.config), "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(), "step": p.step, "epoch": p.epoch,
        "loss_sum": p.loss_sum, "loss_n": p.loss_n, "history": p.history,
        "loader": loader_state, "rng": _rng_state(),
    }
    path = run.out / CHECKPOINT_NAME
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _check_resumable(config: TrainConfig, saved: dict[str, Any]) -> None:
    diff = sorted(k for k, v in dataclasses.asdict(config).items()
                  if k not in RESUMABLE_CHANGES and saved.get(k, v) != v)
    if diff:
        detail = ", ".join(f"{k}: {saved[k]!r} -> {getattr(config, k)!r}" for k in diff)
        raise ValueError(f"cannot resume: the config differs from the checkpoint's ({detail})")


def _resume(run: _Run) -> None:
    path = run.out / CHECKPOINT_NAME
    if not path.exists():
        raise FileNotFoundError(f"resume=True but there is no checkpoint at {path}")
    ckpt = torch.load(path, map_location=run.device, weights_only=False)
    _check_resumable(run.config, ckpt["config"])
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.progress = _Progress(step=ckpt["step"], epoch=ckpt["epoch"], loss_sum=ckpt["loss_sum"],
                             loss_n=ckpt["loss_n"], mid_epoch=ckpt["loader"] is not None,
                             history=list(ckpt["history"]))
    torch.set_rng_state(ckpt["rng"]["torch"].cpu())
    if "cuda" in ckpt["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in ckpt["rng"]["cuda"]])
    if ckpt["loader"] is not None:
        run.train_loader.load_state_dict(ckpt["loader"])
    run.log(f"resumed from {path}: epoch {run.progress.epoch + 1}, step {run.progress.step}")


def _run_epochs(run: _Run) -> bool:
    """Train until ``epochs`` or ``max_steps``; return True if all epochs completed."""
    while run.progress.epoch < run.config.epochs:
        if not run.progress.mid_epoch:
            run.train_loader.set_epoch(run.progress.epoch)
        run.progress.mid_epoch = False
        started = time.perf_counter()
        completed, train_s = _train_epoch(run)
        if not completed:
            _save_checkpoint(run, loader_state=run.train_loader.state_dict())
            run.log(f"stopped at step {run.progress.step} (max_steps), mid-epoch {run.progress.epoch + 1}")
            return False
        _finish_epoch(run, train_s, started)
        if _stop_requested(run) and run.progress.epoch < run.config.epochs:
            run.log(f"stopped at step {run.progress.step} (max_steps)")
            return False
    return True


def train(config: TrainConfig) -> dict[str, Any]:
    """Train (or resume) one run; see the module docstring.

    Returns:
        ``{"history": [per-epoch records], "final": last record or None, "completed":
        all epochs done, "step": optimiser steps, "params": parameter count, "wall_s":
        seconds of this call, "out": output directory, "rank": this process's rank}`` (on
        every rank).
    """
    started = time.perf_counter()
    run = _setup(config)
    try:
        if config.resume:
            _resume(run)
        completed = _run_epochs(run)
    finally:
        if run.ctx.owns_group:
            dist.destroy_process_group()
    history = run.progress.history
    return {"history": history, "final": history[-1] if history else None, "completed": completed,
            "step": run.progress.step, "params": _count(run.model), "wall_s": time.perf_counter() - started,
            "out": str(run.out), "rank": run.ctx.rank}
