"""A training run's state, and its setup: device, process group, loaders, classifier, optimiser.

``setup(config)`` checks the config against the feature cache (channels, grid, classes, the
extraction settings), builds everything and writes the resolved configuration
``<out>/config.json`` (rank 0).
"""

from __future__ import annotations

import dataclasses
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from loffdata.format.manifest import Manifest
from loffdata.loader import LoffLoader
from loffdata.loader.loaderconfig import LoaderConfig
from loffdata.loader.multiscale import MultiScaleConfig, MultiScaleLoader
from loffdata.train.checkpoint import Progress, write_json
from loffdata.train.dist import Dist, init_distributed, resolve_device
from loffdata.train.metrics import EpochLog, check_log_backend
from loffdata.train.models import create_classifier
from loffdata.train.trainconfig import CONFIG_NAME, LOG_NAME, TrainConfig
from loffdata.train.utils import create_optimizer

__all__ = ["MIN_STEPS", "FewStepsWarning", "Run", "count_params", "setup"]


def _check_features(config: TrainConfig, manifest: Manifest | None) -> dict[str, int]:
    """Resolve ``in_chans``, ``grid``, ``num_classes`` from the manifest and check the rest."""
    if manifest is None:
        missing = [k for k in ("in_chans", "grid", "num_classes") if getattr(config, k) is None]
        if missing:
            raise ValueError(f"{config.train}: no manifest, so {missing} must be set in the config")
        return {"in_chans": config.in_chans, "grid": config.grid, "num_classes": config.num_classes}
    c, h, w = manifest.features.shape
    found = {"in_chans": c, "grid": h, "num_classes": manifest.num_classes}
    found.update(
        {
            k: manifest.source.get(s)
            for k, s in (("feature_model", "model"), ("img_size", "img_size"), ("pool", "pool"))
        }
    )
    bad = {
        k: (getattr(config, k), v)
        for k, v in found.items()
        if getattr(config, k) is not None and v is not None and getattr(config, k) != v
    }
    if bad or h != w:
        detail = ", ".join(f"{k}: config {a!r} vs manifest {b!r}" for k, (a, b) in bad.items())
        raise ValueError(
            f"{config.train}: config does not match the feature cache "
            f"({detail or f'grid {h}x{w} is not square'})"
        )
    resolved = {
        k: getattr(config, k) if getattr(config, k) is not None else found[k]
        for k in ("in_chans", "grid", "num_classes")
    }
    if resolved["num_classes"] is None:
        raise ValueError(f"{config.train}: the manifest has no classes; set num_classes")
    return resolved


#: Fewer optimiser steps than this rarely train a transformer classifier from scratch.
MIN_STEPS = 200


class FewStepsWarning(UserWarning):
    """The run has too few optimiser steps for a plain transformer classifier to train well."""


def _warn_few_steps(config: TrainConfig, steps_per_epoch: int) -> None:
    # with the probe path its linear-probe head carries a short run, which few steps do train
    total = config.epochs * steps_per_epoch
    if config.model != "linear" and not config.probe and total < MIN_STEPS:
        warnings.warn(
            f"only {total} optimiser steps ({config.epochs} epochs x {steps_per_epoch}): a "
            f"{config.model} "
            f"classifier without the probe path (--probe False) usually needs {MIN_STEPS}+ on a "
            "small cache. "
            "Keep the probe path (--probe True, the default), raise --epochs (or lower "
            "--batch_size), "
            "and compare with a linear probe first (--model linear --augment none --lr 0.01); "
            "see docs/recipes.md#a-new-dataset-start-here",
            FewStepsWarning,
            stacklevel=3,
        )


def _loaders(config: TrainConfig, device: torch.device) -> tuple[LoffLoader, LoffLoader | None]:
    # the stream settings (storage options, cache, retry ...) come whole from the config
    common = LoaderConfig(stream=config.stream, device=str(device), num_workers=config.num_workers)
    train = LoffLoader(
        config.train,
        common.replace(views=config.views, return_extras=config.distill_weight > 0),
        augment=config.augment,
    )
    if config.multiscale:
        train = MultiScaleLoader(
            train, MultiScaleConfig(**{**config.multiscale, "seed": config.seed})
        )
    val = LoffLoader(config.val, common, augment=None, shuffle=False) if config.val else None
    return train, val


def _model(config: TrainConfig, shape: dict[str, int]) -> nn.Module:
    overrides = {
        k: getattr(config, k)
        for k in ("depth", "embed_dim", "num_heads")
        if getattr(config, k) is not None and config.model != "linear"
    }
    if config.model != "linear":
        overrides.update(
            drop_path_rate=config.drop_path_rate,
            probe=config.probe,
            probe_lr_scale=config.probe_lr_scale,
        )
    torch.manual_seed(config.seed)
    return create_classifier(config.model, norm=config.norm, **shape, **overrides)


@dataclass
class Run:
    config: TrainConfig
    ctx: Dist
    device: torch.device
    model: nn.Module  # unwrapped
    net: nn.Module  # DDP-wrapped under torchrun, else ``model``
    optimizer: torch.optim.Optimizer
    train_loader: LoffLoader
    val_loader: LoffLoader | None
    progress: Progress
    out: Path
    epoch_log: EpochLog

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


def _write_config(run: Run, shape: dict[str, Any]) -> None:
    """``<out>/config.json``: the run's config and what was resolved from it."""
    loader = run.train_loader
    resolved = {
        **shape,
        "device": str(run.device),
        "world_size": run.ctx.world_size,
        "steps_per_epoch": run.steps_per_epoch,
        "params": count_params(run.model),
        "augment": None if loader.spec is None else loader.spec.to_dict(),
        "similarity_search": loader.similarity_search,
    }
    write_json(run.out / CONFIG_NAME, {**dataclasses.asdict(run.config), "resolved": resolved})


def setup(config: TrainConfig) -> Run:
    """Builds the run (see the module docstring); every check comes before any work."""
    check_log_backend(config.log)
    device = resolve_device(config)
    ctx = init_distributed(device)
    if config.amp == "bf16" and device.type != "cuda":
        warnings.warn(
            "amp='bf16' is used on CUDA only; training in float32 on the CPU", stacklevel=3
        )
    train_loader, val_loader = _loaders(config, device)
    shape = _check_features(config, train_loader.manifest)
    _warn_few_steps(config, len(train_loader))
    model = _model(config, shape).to(device)
    net = model
    if ctx.world_size > 1:
        ids = [device.index] if device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    optimizer = create_optimizer(model, lr=config.lr, weight_decay=config.weight_decay)
    out = Path(config.out)
    if ctx.main:
        out.mkdir(parents=True, exist_ok=True)
        if not config.resume:  # a fresh run starts a fresh log
            (out / LOG_NAME).unlink(missing_ok=True)
    log = EpochLog(out, kind=config.log, main=ctx.main)
    run = Run(
        config, ctx, device, model, net, optimizer, train_loader, val_loader, Progress(), out, log
    )
    if ctx.main:
        _write_config(run, shape)
    return run


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
