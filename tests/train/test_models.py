"""Feature classifiers (loffdata.train.models) and training helpers (loffdata.train.utils)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from loffdata.train.models import ClassifierConfig, LinearProbe, LoffClassifier, create_classifier
from loffdata.train.objective import recipe_loss
from loffdata.train.utils import create_optimizer, loss_fn, lr_at, param_groups

SMALL = {"depth": 2, "probe": False}  # deit_t at depth 2 keeps the ViT tests fast; plain ViT


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("chans", "grid"), [(64, 7), (64, 16), (384, 8)])
def test_vit_forward_backward_shapes_and_dtypes(chans, grid, dtype):
    torch.manual_seed(0)
    model = create_classifier("deit_t", in_chans=chans, grid=grid, num_classes=5, **SMALL)
    x = torch.randn(3, chans, grid, grid).to(dtype)
    logits = model(x)
    assert logits.shape == (3, 5) and logits.dtype == torch.float32
    loss_fn(logits, torch.tensor([0, 1, 4])).backward()
    grad = model.projection.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert model.projection.weight.shape == (192, chans, 1, 1)


def test_vit_accepts_other_grids_than_it_was_built_for():
    model = create_classifier("deit_t", in_chans=16, grid=8, num_classes=4, **SMALL).eval()
    for h, w in [(8, 8), (4, 4), (16, 16), (6, 10)]:
        assert model(torch.randn(2, 16, h, w)).shape == (2, 4)


def test_deit_s_is_deit_small_and_overrides_apply():
    size = ClassifierConfig(kind="deit_s", in_chans=768, grid=16, num_classes=10).vit_size()
    assert size == {"embed_dim": 384, "depth": 12, "num_heads": 6}
    model = create_classifier(
        "deit_s",
        in_chans=32,
        grid=4,
        num_classes=3,
        depth=1,
        embed_dim=96,
        num_heads=2,
        probe=False,
    )
    assert isinstance(model, LoffClassifier) and len(model.vit.blocks) == 1
    assert model.vit.embed_dim == 96 and model(torch.randn(2, 32, 4, 4)).shape == (2, 3)


@pytest.mark.parametrize("norm", ["batch", "layer", "none"])
def test_input_norm_choices(norm):
    model = create_classifier("deit_t", in_chans=8, grid=4, num_classes=3, norm=norm, **SMALL)
    assert model(torch.randn(2, 8, 4, 4) * 1e3).shape == (2, 3)


def test_layer_norm_normalises_each_position_over_channels():
    model = create_classifier("deit_t", in_chans=8, grid=4, num_classes=3, norm="layer", **SMALL)
    y = model.norm(torch.randn(2, 8, 4, 4) * 50 + 7)
    assert torch.allclose(y.mean(1), torch.zeros(2, 4, 4), atol=1e-5)


def test_batch_norm_standardises_each_channel():
    model = create_classifier("deit_t", in_chans=4, grid=4, num_classes=3, **SMALL).train()
    x = torch.randn(8, 4, 4, 4) * torch.tensor([1.0, 10.0, 100.0, 1000.0]).view(1, 4, 1, 1)
    y = model.norm(x)
    assert torch.allclose(y.std(dim=(0, 2, 3)), torch.ones(4), atol=0.02)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("norm", ["batch", "layer", "none"])
def test_linear_probe(dtype, norm):
    model = create_classifier("linear", in_chans=384, grid=16, num_classes=7, norm=norm)
    assert isinstance(model, LinearProbe)
    x = torch.randn(4, 384, 16, 16).to(dtype)
    logits = model(x)
    assert logits.shape == (4, 7) and logits.dtype == torch.float32
    loss_fn(logits, torch.tensor([0, 1, 2, 6])).backward()
    assert model.head.weight.grad.abs().sum() > 0
    if norm == "none":
        ref = F.linear(x.float().mean(dim=(2, 3)), model.head.weight, model.head.bias)
        assert torch.allclose(logits, ref, atol=1e-5)


def test_module_in_half_precision_casts_float32_input():
    model = create_classifier("linear", in_chans=8, grid=2, num_classes=3, norm="layer").to(
        torch.bfloat16
    )
    assert model(torch.randn(2, 8, 2, 2)).dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "deit_xl"}, "unknown classifier kind"),
        ({"norm": "group"}, "unknown norm"),
        ({"grid": 0}, "grid"),
        ({"embed_dim": 100, "num_heads": 3}, "multiple of num_heads"),
        ({"num_classes": 0}, "num_classes"),
        ({"depht": 3}, "unknown classifier option"),
    ],
)
def test_bad_configs_raise(kwargs, match):
    args = {"kind": "deit_t", "in_chans": 8, "grid": 4, "num_classes": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        create_classifier(args.pop("kind"), **args)


def test_wrong_channel_count_names_the_expected_shape():
    model = create_classifier("linear", in_chans=8, grid=4, num_classes=3)
    with pytest.raises(ValueError, match=r"\(N, 8, H, W\)"):
        model(torch.randn(2, 9, 4, 4))


# --------------------------------------------------------------------------- train_utils


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_loss_fn_hard_labels_equal_cross_entropy(smoothing):
    logits, target = torch.randn(6, 5), torch.randint(0, 5, (6,))
    expected = F.cross_entropy(logits, target, label_smoothing=smoothing)
    assert torch.allclose(loss_fn(logits, target, label_smoothing=smoothing), expected)
    assert torch.allclose(
        loss_fn(logits.half(), target.int()), F.cross_entropy(logits.half().float(), target)
    )


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_loss_fn_soft_labels_equal_cross_entropy(smoothing):
    logits = torch.randn(6, 5)
    a, b = torch.randint(0, 5, (2, 6))
    soft = 0.7 * F.one_hot(a, 5).float() + 0.3 * F.one_hot(b, 5).float()  # mixup targets
    expected = F.cross_entropy(logits, soft, label_smoothing=smoothing)
    assert torch.allclose(loss_fn(logits, soft, label_smoothing=smoothing), expected)
    manual = -(soft * logits.log_softmax(-1)).sum(-1).mean()
    assert torch.allclose(loss_fn(logits, soft), manual, atol=1e-6)
    one_hot = F.one_hot(a, 5).to(torch.bfloat16)
    assert torch.allclose(loss_fn(logits, one_hot), F.cross_entropy(logits, a), atol=1e-6)


@pytest.mark.parametrize(
    "target",
    [torch.zeros(6, 4), torch.zeros(5, dtype=torch.long), torch.zeros(6, dtype=torch.bool)],
)
def test_loss_fn_rejects_mismatched_targets(target):
    with pytest.raises(ValueError, match="labels"):
        loss_fn(torch.randn(6, 5), target)


def test_param_groups_exempt_norms_biases_and_position_embedding():
    model = create_classifier("deit_t", in_chans=8, grid=4, num_classes=3, **SMALL)
    decay, no_decay = param_groups(model, weight_decay=0.05)
    assert decay["lr_scale"] == no_decay["lr_scale"] == 1.0
    names = {id(p): n for n, p in model.named_parameters()}
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert {"vit.pos_embed", "vit.cls_token", "norm.weight", "vit.head.bias"} <= skipped
    assert all(p.ndim >= 2 for p in decay["params"]) and decay["weight_decay"] == 0.05
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert isinstance(create_optimizer(model, lr=1e-3), torch.optim.AdamW)


def test_probe_path_is_a_second_head_with_its_own_loss_and_learning_rate():
    torch.manual_seed(0)
    model = create_classifier(
        "deit_t", in_chans=8, grid=4, num_classes=3, **{**SMALL, "probe": True}
    )
    x = torch.randn(5, 8, 4, 4) * 3 + 1
    y = torch.tensor([0, 1, 2, 0, 1])
    model.eval()
    vit, probe = model.vit(model.norm(x)), model.probe(x)
    assert torch.allclose(
        model(x), vit + probe, atol=1e-6
    )  # no training loss known yet: both heads
    model.track_heads(torch.tensor([1.0, 2.0]))  # the ViT fits better: it predicts
    assert torch.equal(model(x), vit)
    for _ in range(10):
        model.track_heads(torch.tensor([1.5, 0.5]))  # the running means cross: the probe predicts
    assert model.head_loss[1] < model.head_loss[0] and torch.equal(model(x), probe)
    assert "head_loss" in model.state_dict()  # saved with the weights: a resumed run chooses alike
    model.train()
    heads = model(x)
    assert heads.shape == (2, 5, 3)
    # in training each head has its own loss: the probe's gradient does not depend on the ViT
    recipe_loss(heads, y).backward()
    probe_grad = model.probe.head.weight.grad.clone()
    solo = create_classifier("linear", in_chans=8, grid=4, num_classes=3)
    solo.load_state_dict(model.probe.state_dict())
    solo.train()
    (0.5 * loss_fn(solo(x), y)).backward()  # the mean over the two heads
    assert torch.allclose(probe_grad, solo.head.weight.grad, atol=1e-6)
    assert model.vit.head.weight.grad.abs().sum() > 0
    plain = create_classifier("deit_t", in_chans=8, grid=4, num_classes=3, **SMALL)
    assert plain.probe is None and plain.train()(x).shape == (5, 3)
    groups = param_groups(model, weight_decay=0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    for group in groups:
        in_probe = {names[id(p)].startswith("probe.") for p in group["params"]}
        assert in_probe == {group["lr_scale"] == 10.0}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    with pytest.raises(ValueError, match="probe_lr_scale"):
        ClassifierConfig(kind="deit_t", in_chans=8, grid=4, num_classes=3, probe_lr_scale=0)


def test_lr_schedule_warms_up_then_decays_to_min():
    lrs = [lr_at(s, total=100, warmup=10, base_lr=1.0, min_lr=0.01) for s in range(101)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[100] == pytest.approx(0.01)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[55] == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    with pytest.raises(ValueError):
        lr_at(0, total=10, warmup=11, base_lr=1.0)


# --------------------------------------------------------------------------- recipes/configs

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "recipes" / "configs").glob("*.yaml"))
ARCH_KEYS = ("depth", "embed_dim", "num_heads", "norm", "drop_path_rate")


def test_configs_share_one_flat_schema():
    keys = [list(yaml.safe_load(p.read_text())) for p in CONFIGS]
    assert len(CONFIGS) >= 9 and all(k == keys[0] for k in keys)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_values_are_consistent(path):
    # imported here, so that a broken augment module fails only this test
    from loffdata.augment import PRESETS

    cfg = yaml.safe_load(path.read_text())
    assert cfg["augment"] in PRESETS and cfg["optimizer"] == "adamw" and cfg["pool"] >= 1
    assert all(
        isinstance(cfg[k], float) for k in ("lr", "min_lr", "weight_decay", "label_smoothing")
    )
    patch = int(re.search(r"patch(\d+)", cfg["feature_model"])[1])
    assert (cfg["in_chans"], cfg["grid"]) == feature_dims(
        cfg["feature_model"], cfg["img_size"], patch, cfg["pool"]
    )
    overrides = {k: cfg[k] for k in ARCH_KEYS if cfg[k] is not None}
    with torch.device("meta"):  # builds DeiT-S on 1536 channels without allocating
        model = create_classifier(
            cfg["model"],
            in_chans=cfg["in_chans"],
            grid=cfg["grid"],
            num_classes=cfg["num_classes"] or 10,
            **overrides,
        )
    assert model.config.kind == cfg["model"]


def feature_dims(model: str, img_size: int, patch: int, pool: int) -> tuple[int, int]:
    width = {"tiny": 192, "small": 384, "base": 768, "large": 1024, "giant": 1536}
    return width[re.search(r"vit_(\w+?)_patch", model)[1]], img_size // patch // pool
