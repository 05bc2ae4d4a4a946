"""views=k in the recipe: per-sample averaged loss (against a hand computation) and a run."""

from __future__ import annotations

import json
import math

import pytest
import torch

from loffdata.train.objective import check_objective, recipe_loss
from loffdata.train.trainer import CONFIG_NAME, LOG_NAME, TrainConfig, train
from loffdata.train.views import per_row_loss, view_averaged_loss
from tests.train.synthetic import write_splits


def _hand_ce(row: list[float], label: int, eps: float, classes: int) -> float:
    lse = math.log(sum(math.exp(v) for v in row))
    logp = [v - lse for v in row]
    return -(1 - eps) * logp[label] - eps / classes * sum(logp)


def test_view_averaged_loss_matches_hand_computation():
    torch.manual_seed(0)
    n, k, classes, eps = 3, 4, 5, 0.1
    logits = torch.randn(n * k, classes)
    labels = torch.tensor([2, 0, 4]).repeat_interleave(k)
    got = recipe_loss(logits, labels, views=k, label_smoothing=eps)
    per_sample = []
    for i in range(n):
        view_losses = [
            _hand_ce(logits[i * k + j].tolist(), int(labels[i * k + j]), eps, classes)
            for j in range(k)
        ]
        per_sample.append(sum(view_losses) / k)
    assert got.item() == pytest.approx(sum(per_sample) / n, rel=1e-5)


def test_view_average_checks_shapes():
    rows = torch.tensor([1.0, 3.0, 10.0, 14.0])  # sample 0: mean 2; sample 1: mean 12
    assert view_averaged_loss(rows, views=2).item() == pytest.approx(7.0)
    with pytest.raises(ValueError, match=r"N \* 3"):
        view_averaged_loss(rows, views=3)
    with pytest.raises(ValueError, match="views"):
        view_averaged_loss(rows, views=0)
    with pytest.raises(ValueError, match="views"):
        check_objective(views=0, distill_weight=0.0, temperature=1.0)


def test_per_row_loss_soft_labels():
    logits = torch.randn(4, 3)
    soft = torch.softmax(torch.randn(4, 3), dim=1)
    expected = -(soft * torch.log_softmax(logits, dim=1)).sum(dim=1)
    torch.testing.assert_close(per_row_loss(logits, soft), expected)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    return write_splits(tmp_path_factory.mktemp("views_data"), train=48, val=18, shard=16)


def test_views_recipe_runs(data, tmp_path):
    config = TrainConfig(
        train=data["train"],
        val=data["val"],
        out=str(tmp_path),
        model="deit_t",
        depth=1,
        embed_dim=32,
        num_heads=2,
        batch_size=16,
        epochs=2,
        lr=3e-3,
        warmup_epochs=0,
        device="cpu",
        progress=False,
        augment="loffta",
        views=3,
    )
    results = train(config)
    assert (
        results["completed"] and results["step"] == 2 * 3
    )  # 48 samples / 16 a step: views cost no steps
    log = [json.loads(line) for line in (tmp_path / LOG_NAME).read_text().splitlines()]
    assert len(log) == 2 and all(math.isfinite(r["train_loss"]) for r in log)
    saved = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert saved["views"] == 3 and saved["resolved"]["steps_per_epoch"] == 3
