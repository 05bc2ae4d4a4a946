"""The training loop: steps with a warm-up + cosine learning rate, epochs, evaluation.

Per epoch: ``LoffLoader(train, augment=...)`` -> classifier -> :func:`loss_fn` -> AdamW with
a per-step learning rate (:func:`lr_at`), a tqdm bar with samples/s and data wait, then an
evaluation pass over ``val`` (no augmentation, no shuffle; sums over all ranks), one record
in ``<out>/log.jsonl`` (and TensorBoard with ``log="tensorboard"``), and a checkpoint.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from loffdata.loader import LoffLoader
from loffdata.train.checkpoint import resume, save_checkpoint
from loffdata.train.dist import Dist, all_sum
from loffdata.train.metrics import epoch_bar, format_record
from loffdata.train.objective import recipe_loss
from loffdata.train.predictions import PredictionsFile, rank_path
from loffdata.train.run import Run, count_params, setup
from loffdata.train.trainconfig import TrainConfig
from loffdata.train.utils import loss_fn, lr_at

__all__ = ["LOSS_EVERY", "DeviceLoss", "evaluate", "run_training"]

#: training steps between two reads of the running loss on the host (each read waits for
#: the device; reading every step would keep the GPU's queue empty)
LOSS_EVERY = 50


class DeviceLoss:
    """The running train-loss sum, kept on the device and read into ``progress`` every
    ``every`` steps (and by :meth:`flush`): one host sync per ``every`` steps, not per step."""

    def __init__(self, progress: Any, device: torch.device, every: int | None = None):
        self.progress, self.every = progress, max(1, int(LOSS_EVERY if every is None else every))
        self.sum = torch.zeros((), dtype=torch.float64, device=device)
        self.n = self.steps = 0

    def add(self, loss: torch.Tensor, n: int) -> None:
        self.sum += loss.detach().to(torch.float64) * n
        self.n, self.steps = self.n + n, self.steps + 1
        if self.steps % self.every == 0:
            self.flush()

    def flush(self) -> None:
        if self.n:
            self.progress.loss_sum += float(self.sum)
            self.progress.loss_n += self.n
            self.sum.zero_()
            self.n = 0


def _set_lr(run: Run) -> None:
    steps, c = run.steps_per_epoch, run.config
    total = c.epochs * steps
    warmup = min(total, round(c.warmup_epochs * steps))
    lr = lr_at(run.progress.step, total=total, warmup=warmup, base_lr=c.lr, min_lr=c.min_lr)
    for group in run.optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def _train_step(
    run: Run, meter: DeviceLoss, features: torch.Tensor, labels: torch.Tensor, extras: Any = None
) -> None:
    _set_lr(run)
    c = run.config
    heads: list[torch.Tensor] = []  # each head's loss, with the classifier's probe path
    with run.autocast():
        loss = recipe_loss(
            run.net(features),
            labels,
            extras,
            views=c.views,
            label_smoothing=c.label_smoothing,
            distill_weight=c.distill_weight,
            temperature=c.temperature,
            head_losses=heads,
        )
    if heads and hasattr(run.model, "track_heads"):
        run.model.track_heads(torch.stack(heads))
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    run.progress.step += 1
    meter.add(loss, features.shape[0])


def _base_lr(optimizer: torch.optim.Optimizer) -> float:
    group = optimizer.param_groups[0]
    return group["lr"] / group.get("lr_scale", 1.0)


def _stop_requested(run: Run) -> bool:
    return run.config.max_steps is not None and run.progress.step >= run.config.max_steps


def _train_epoch(run: Run) -> tuple[bool, float]:
    """Train the rest of the current epoch; return (completed, training seconds)."""
    run.net.train()
    start, loader = time.perf_counter(), run.train_loader
    position = loader.state_dict()["position"]  # > 0 only when resumed mid-epoch
    left = len(loader) - position if 0 < position < len(loader) else len(loader)
    bar = epoch_bar(
        epoch=run.progress.epoch,
        epochs=run.config.epochs,
        total=left,
        enabled=run.ctx.main and run.config.progress,
    )
    meter = DeviceLoss(run.progress, run.device)
    try:
        for batch in loader:
            _train_step(run, meter, *batch)
            _update_bar(bar, run)
            if _stop_requested(run) and loader.state_dict()["position"] < len(loader):
                return False, time.perf_counter() - start
    finally:
        meter.flush()  # the checkpoint and the epoch record read progress.loss_sum
        _close_bar(bar)
    return True, time.perf_counter() - start


def _close_bar(bar: Any) -> None:
    # tqdm redraws at most every 0.1 s: an epoch shorter than that would end without its
    # figures ever shown, so draw the final postfix once before the bar goes.
    if not bar.disable:
        bar.refresh()
    bar.close()


def _update_bar(bar: Any, run: Run) -> None:
    bar.update(1)
    if bar.disable:
        return
    stats, p = run.train_loader.stats, run.progress
    bar.set_postfix_str(
        f"loss {p.loss_sum / max(p.loss_n, 1):.3f}, "
        f"{stats.samples_per_s * run.ctx.world_size:,.0f} samples/s, "
        f"data wait {stats.wait_fraction:.0%}",
        refresh=False,
    )


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: LoffLoader,
    *,
    device: torch.device,
    autocast: Any = None,
    world_size: int = 1,
    predictions: PredictionsFile | None = None,
) -> dict[str, float]:
    """Mean cross-entropy and top-1 accuracy of ``model`` over one pass of ``loader``.

    Under DDP the sums are all-reduced, so every rank returns the global figures (the
    loader's ``partial="pad"`` policy may count up to ``world_size - 1`` samples twice).
    With ``predictions``, every sample's key, label, prediction and loss are added to it.

    Returns:
        ``{"val_loss": ..., "val_acc": ..., "val_samples": ...}``.
    """
    was_training = model.training
    model.eval()
    loss_sum = correct = count = 0.0
    for batch in loader:
        features, labels = batch[0], batch[1]
        with autocast or nullcontext():
            logits = model(features)
        loss_sum += loss_fn(logits, labels).item() * labels.shape[0]
        correct += (logits.argmax(dim=1) == labels).sum().item()
        count += labels.shape[0]
        if predictions is not None:
            predictions.add(batch.keys, labels, logits)
    model.train(was_training)
    loss_sum, correct, count = all_sum(
        [loss_sum, correct, count], device, Dist(world_size=world_size)
    )
    return {
        "val_loss": loss_sum / max(count, 1),
        "val_acc": correct / max(count, 1),
        "val_samples": int(count),
    }


def _predictions_file(run: Run) -> PredictionsFile | None:
    """Where this rank writes ``config.predictions`` (``None``: not asked for)."""
    if not run.config.predictions:
        return None
    return PredictionsFile(rank_path(run.config.predictions, run.ctx.rank, run.ctx.world_size))


def _epoch_record(run: Run, train_s: float, wall_s: float) -> dict[str, Any]:
    p, stats = run.progress, run.train_loader.stats
    loss_sum, loss_n = all_sum([p.loss_sum, p.loss_n], run.device, run.ctx)
    record = {
        "epoch": p.epoch,
        "step": p.step,
        "train_loss": loss_sum / max(loss_n, 1),
        "lr": _base_lr(run.optimizer),
    }
    if run.val_loader is not None:
        run.val_loader.set_epoch(0)
        preds = _predictions_file(run)
        metrics = evaluate(
            run.model,
            run.val_loader,
            device=run.device,
            autocast=run.autocast(),
            world_size=run.ctx.world_size,
            predictions=preds,
        )
        record.update(val_loss=metrics["val_loss"], val_acc=metrics["val_acc"])
        if preds is not None:
            preds.write()  # the latest evaluation's predictions, every epoch
    samples = stats.samples * run.ctx.world_size
    record.update(
        samples_per_s=samples / max(train_s, 1e-9),
        wait_fraction=stats.wait_fraction,
        train_time=train_s,
        time=time.perf_counter() - wall_s,
    )
    return record


def _finish_epoch(run: Run, train_s: float, started: float) -> dict[str, Any]:
    record = _epoch_record(run, train_s, started)
    p = run.progress
    p.history.append(record)
    p.epoch, p.loss_sum, p.loss_n = p.epoch + 1, 0.0, 0.0
    run.epoch_log.write(record)
    run.log(format_record(record, run.config.epochs))
    save_checkpoint(run, loader_state=None)
    return record


def _run_epochs(run: Run) -> bool:
    """Train until ``epochs`` or ``max_steps``; return True if all epochs completed."""
    while run.progress.epoch < run.config.epochs:
        if not run.progress.mid_epoch:
            run.train_loader.set_epoch(run.progress.epoch)
        run.progress.mid_epoch = False
        started = time.perf_counter()
        completed, train_s = _train_epoch(run)
        if not completed:
            save_checkpoint(run, loader_state=run.train_loader.state_dict())
            run.log(
                f"stopped at step {run.progress.step} (max_steps), mid-epoch "
                f"{run.progress.epoch + 1}"
            )
            return False
        _finish_epoch(run, train_s, started)
        if _stop_requested(run) and run.progress.epoch < run.config.epochs:
            run.log(f"stopped at step {run.progress.step} (max_steps)")
            return False
    return True


def run_training(config: TrainConfig) -> dict[str, Any]:
    """The body of :func:`loffdata.train.trainer.train` (which documents the result)."""
    started = time.perf_counter()
    run = setup(config)
    try:
        if config.resume:
            resume(run)
        completed = _run_epochs(run)
    finally:
        run.epoch_log.close()
        if run.ctx.owns_group:
            torch.distributed.destroy_process_group()
    history = run.progress.history
    return {
        "history": history,
        "final": history[-1] if history else None,
        "completed": completed,
        "step": run.progress.step,
        "params": count_params(run.model),
        "wall_s": time.perf_counter() - started,
        "out": str(run.out),
        "rank": run.ctx.rank,
    }
