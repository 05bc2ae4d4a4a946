"""The training loop's host syncs, counted on the loader's strict CUDA stand-in."""

from __future__ import annotations

import math
import types
from contextlib import nullcontext

import torch
from torch import nn

from loffdata.loader import LoffLoader
from loffdata.loader.device import StandInCuda
from loffdata.train import loop
from loffdata.train.checkpoint import Progress
from loffdata.train.trainconfig import TrainConfig


def _run(root, loader, gpu) -> types.SimpleNamespace:
    net = nn.Sequential(nn.Flatten(), nn.Linear(8 * 4 * 4, 4))
    cfg = TrainConfig(train=str(root), epochs=2, progress=False, views=2, label_smoothing=0.0)
    return types.SimpleNamespace(
        config=cfg,
        net=net,
        model=net,
        optimizer=torch.optim.AdamW(net.parameters(), lr=1e-3),
        progress=Progress(),
        steps_per_epoch=len(loader),
        train_loader=loader,
        device=gpu.compute,
        autocast=nullcontext,
        ctx=types.SimpleNamespace(main=True, world_size=1),
    )


def test_recipe_reads_the_loss_once_per_n_steps_not_per_step(make_dataset, monkeypatch):
    """Views and mixing on: over two epochs the loop and the loader make at most one host
    sync per ``LOSS_EVERY`` steps (plus one at each epoch's end); the loss sum is exact."""
    root, _ = make_dataset(n=52, shard_size=12, classes=4)
    monkeypatch.setattr(loop, "LOSS_EVERY", 3)
    gpu = StandInCuda()
    spec = {"preset": "loffta", "mixup": 0.5, "cutmix": 0.5, "num_classes": 4}
    loader = LoffLoader(
        str(root), device=gpu, batch_size=8, num_workers=0, augment=spec, views=2, seed=1
    )
    run = _run(root, loader, gpu)
    losses = []
    original = loop.recipe_loss
    monkeypatch.setattr(
        loop, "recipe_loss", lambda *a, **k: (losses.append(original(*a, **k)), losses[-1])[1]
    )
    before = gpu.syncs
    for epoch in range(2):
        loader.set_epoch(epoch)
        completed, _ = loop._train_epoch(run)
        assert completed
    steps = 2 * len(loader)
    assert run.progress.step == steps == 14
    assert 0 < gpu.syncs - before <= 2 * (math.ceil(len(loader) / 3))  # was one per step
    rows = [16] * 6 + [8]  # 2 views of 8 samples; the last batch has 4
    exact = sum(float(v.detach().as_subclass(torch.Tensor)) * n for v, n in zip(losses, rows * 2))
    assert (
        math.isclose(run.progress.loss_sum, exact, rel_tol=1e-9)
        and run.progress.loss_n == sum(rows) * 2
    )
