"""Distillation loss against a reference implementation; the distillation recipe runs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from loffdata.format.logits import encode_logits
from loffdata.format.writer import WriterConfig, write_dataset
from loffdata.train.distill import distill_rows, teacher_probs
from loffdata.train.objective import recipe_loss
from loffdata.train.trainer import TrainConfig, train


def _reference_kd(
    student: list[float], teacher_rows: list[list[float]], classes_kept: list[list[int]], t: float
) -> float:
    """Plain-Python KD: teacher softmax over the kept classes at T, mean over targets, T^2 KL."""
    k = len(student)
    p = [0.0] * k
    for row, kept in zip(teacher_rows, classes_kept, strict=True):
        zs = [row[c] / t for c in kept]
        m = max(zs)
        norm = sum(math.exp(z - m) for z in zs)
        for c, z in zip(kept, zs, strict=True):
            p[c] += math.exp(z - m) / norm / len(teacher_rows)
    lse = math.log(sum(math.exp(s / t) for s in student))
    return (
        t
        * t
        * sum(pc * (math.log(pc) - (student[c] / t - lse)) for c, pc in enumerate(p) if pc > 0)
    )


@pytest.mark.parametrize(
    ("topk", "targets", "temperature"), [(None, 1, 1.0), (None, 3, 4.0), (3, 2, 2.0)]
)
def test_distill_rows_match_reference(topk, targets, temperature):
    rng = np.random.default_rng(0)
    n, classes = 5, 7
    teacher = rng.standard_normal((n, targets, classes)).astype(np.float32) * 2
    student = torch.from_numpy(rng.standard_normal((n, classes)).astype(np.float32))
    enc = [encode_logits(teacher[i], topk=topk) for i in range(n)]
    values = torch.from_numpy(np.stack([e["logits"] for e in enc]))
    index = torch.from_numpy(np.stack([e["logits_index"] for e in enc])) if topk else None
    got = distill_rows(
        student,
        teacher_probs(values, index, num_classes=classes, temperature=temperature),
        temperature=temperature,
    )
    stored = values.float().numpy()
    for i in range(n):
        kept = [list(range(classes))] * targets if topk is None else index[i].tolist()
        rows = [[0.0] * classes for _ in range(targets)]
        for a in range(targets):
            for j, c in enumerate(kept[a]):
                rows[a][c] = float(stored[i, a, j])
        ref = _reference_kd(student[i].tolist(), rows, kept, temperature)
        assert got[i].item() == pytest.approx(ref, rel=1e-5, abs=1e-6)


def test_full_logits_match_torch_kl_div():
    torch.manual_seed(0)
    s, t = torch.randn(6, 10), torch.randn(6, 10)
    temperature = 3.0
    p = teacher_probs(t, num_classes=10, temperature=temperature)
    ref = (
        F.kl_div(
            F.log_softmax(s / temperature, 1),
            F.log_softmax(t / temperature, 1),
            reduction="batchmean",
            log_target=True,
        )
        * temperature**2
    )
    assert distill_rows(s, p, temperature=temperature).mean().item() == pytest.approx(
        ref.item(), rel=1e-5
    )


def test_recipe_loss_mixes_ce_and_kd_per_sample():
    torch.manual_seed(1)
    n, views, classes, w, temp = 3, 2, 4, 0.7, 2.0
    logits = torch.randn(n * views, classes)
    labels = torch.tensor([0, 3, 1]).repeat_interleave(views)
    teacher = torch.randn(n, 1, classes).repeat_interleave(views, dim=0)
    got = recipe_loss(
        logits, labels, {"logits": teacher}, views=views, distill_weight=w, temperature=temp
    )
    ce = F.cross_entropy(logits, labels, reduction="none")
    kd = (
        F.kl_div(
            F.log_softmax(logits / temp, 1),
            F.log_softmax(teacher[:, 0] / temp, 1),
            reduction="none",
            log_target=True,
        ).sum(1)
        * temp**2
    )
    assert got.item() == pytest.approx(
        ((1 - w) * ce + w * kd).view(n, views).mean(1).mean().item(), rel=1e-5
    )
    with pytest.raises(ValueError, match="teacher"):
        recipe_loss(logits, labels, None, distill_weight=0.5)
    with pytest.raises(ValueError, match="temperature"):
        teacher_probs(teacher, num_classes=classes, temperature=0.0)


def test_distill_recipe_runs(tmp_path):
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((3, 16, 1, 1))

    def samples(n):
        for i in range(n):
            y = i % 3
            z = np.eye(3, dtype=np.float32)[y] * 4 + rng.standard_normal(3).astype(np.float32)
            x = (centers[y] * 0.5 + rng.standard_normal((16, 4, 4))).astype(np.float32)
            yield f"s{i:05d}", x, y, encode_logits(z, topk=2)

    write_dataset(
        str(tmp_path / "train"),
        samples(48),
        config=WriterConfig(max_samples=16),
        classes=list("abc"),
    )
    config = TrainConfig(
        train=str(tmp_path / "train"),
        out=str(tmp_path / "run"),
        model="deit_t",
        depth=1,
        embed_dim=32,
        num_heads=2,
        batch_size=16,
        epochs=2,
        warmup_epochs=0,
        device="cpu",
        progress=False,
        distill_weight=0.5,
        temperature=2.0,
        views=2,
    )
    results = train(config)
    assert results["completed"] and results["step"] == 6
    assert all(math.isfinite(r["train_loss"]) for r in results["history"])
