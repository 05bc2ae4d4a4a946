"""Mixup and cutmix with a partner row; labels become soft labels. Torch only.

Partners are drawn within consecutive groups of ``mix_group`` samples of the batch, so a
row's partner, weight and box are a function of (seed, epoch, its group of the global
order) -- identical for any world size when ``mix_group`` divides the per-rank batch size.
"""

from __future__ import annotations

import numpy as np
import torch

from loffdata.augment import rng
from loffdata.augment.opkit import Draw, Field, Op, Params, Step
from loffdata.augment.staging import stage

__all__ = ["OPS", "STEPS", "mix", "check_labels"]


def mix(
    x: torch.Tensor, y: torch.Tensor | None, params: Params, *, num_classes: int | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mixup/cutmix each row with ``mix_partner``; labels become soft [R, num_classes]."""
    if num_classes is None:
        return x, y
    dev = x.device
    t = stage(
        dev,
        partner=params.mix_partner,
        lam=params.mix_lam,
        mode=params.mix_mode,
        box=params.cut_box,
    )
    partner, lam = t["partner"], t["lam"]
    if params.mix_mode.any():
        x = x.float()
        x = _mix_maps(x, x[partner], t)
    if y is None:
        return x, None
    check_labels(y, num_classes)
    classes = torch.arange(num_classes, device=dev)
    onehot = (y.to(dev, torch.int64)[:, None] == classes).float()  # no device-side assert
    return x, onehot * lam[:, None] + onehot[partner] * (1 - lam[:, None])


def check_labels(y: torch.Tensor, num_classes: int, keys: list[str] | None = None) -> None:
    """Labels on the host must lie in ``[0, num_classes)`` before they become soft labels.

    The one label check of mixing. Unlabelled samples (label -1) cannot be mixed. Labels
    already on a GPU are not read back (that would make the host wait);
    :class:`~loffdata.loader.LoffLoader` calls this on the host copy of every batch, with
    its ``keys``, before the batch reaches the device step.

    Raises:
        ValueError: a label is negative (unlabelled) or not below ``num_classes``; names
        up to five of the samples' keys when ``keys`` are given.
    """
    if y.device.type != "cpu" or getattr(y, "loffdata_on_device", False) or y.numel() == 0:
        return  # (``loffdata_on_device``: a tensor on the loader's CUDA stand-in)
    bad = (y < 0) | (y >= num_classes)
    if bool(bad.any()):
        unlabelled = int((y < 0).sum())
        named = [k for k, b in zip(keys, bad.tolist()) if b][:5] if keys else []
        raise ValueError(
            f"mixup/cutmix need a label in [0, {num_classes}) for every sample; this batch has "
            f"{unlabelled} unlabelled (label -1) and {int(bad.sum()) - unlabelled} "
            f"out-of-range labels{f', e.g. keys {named}' if named else ''}; "
            "use a preset without mixing for unlabelled data"
        )


def _mix_maps(x: torch.Tensor, xp: torch.Tensor, t: dict[str, torch.Tensor]) -> torch.Tensor:
    dev, lam, mode = x.device, t["lam"], t["mode"]
    w = torch.where(mode == 1, lam, torch.ones_like(lam))[:, None, None, None]
    out = x * w + xp * (1 - w)
    box = t["box"][:, :, None, None]
    yy = torch.arange(x.shape[-2], device=dev)[None, :, None]
    xx = torch.arange(x.shape[-1], device=dev)[None, None, :]
    inside = (yy >= box[:, 0]) & (yy < box[:, 2]) & (xx >= box[:, 1]) & (xx < box[:, 3])
    return torch.where(inside[:, None], xp, out)


def _mixing(spec, d: Draw) -> dict[str, np.ndarray]:
    """Partner, mode, weight and box of every row, drawn per group of ``mix_group`` samples.

    The batch is cut into consecutive groups of ``mix_group`` samples from its first one
    (the last group may be shorter); a row's partner is a row of its group, and the group's
    draws come from a generator keyed by (seed, epoch, the group's ordered sample indices,
    views). When ``mix_group`` divides every per-rank batch size, the groups are aligned
    groups of the global order: the same for any world size and number of workers."""
    r = d.indices.size * spec.views
    if not spec.mixing:  # nothing is mixed: no draws
        return {
            "mix_mode": np.zeros(r, np.int8),
            "mix_partner": np.arange(r, dtype=np.int64),
            "mix_lam": np.ones(r, np.float32),
            "cut_box": np.zeros((r, 4), np.int64),
        }
    starts = range(0, d.indices.size, spec.mix_group)
    parts = [_group(spec, d, d.indices[s : s + spec.mix_group], s * spec.views) for s in starts]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _group(spec, d: Draw, group: np.ndarray, first_row: int) -> dict[str, np.ndarray]:
    key = rng.mix(np.uint64(rng.batch_key(d.seed, d.epoch, group)), spec.views)
    gen = np.random.default_rng(int(key))
    r = group.size * spec.views
    partner = gen.permutation(r).astype(np.int64) + first_row
    u = gen.random(r)
    mode = np.where(u < spec.mixup, 1, np.where(u < spec.mixup + spec.cutmix, 2, 0)).astype(np.int8)
    lam_mix = gen.beta(spec.mixup_alpha, spec.mixup_alpha, r)
    cut_box, lam_cut = _cut_boxes(gen, gen.beta(spec.cutmix_alpha, spec.cutmix_alpha, r), d.out_hw)
    lam = np.select([mode == 1, mode == 2], [lam_mix, lam_cut], 1.0).astype(np.float32)
    return {
        "mix_mode": mode,
        "mix_partner": partner,
        "mix_lam": lam,
        "cut_box": np.where((mode == 2)[:, None], cut_box, 0),
    }


def _cut_boxes(
    gen: np.random.Generator, lam: np.ndarray, hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """CutMix boxes of area ~(1 - lam), clipped to the grid; lam corrected to the true area."""
    h, w = hw
    rat = np.sqrt(1.0 - lam)
    ch, cw = (h * rat).astype(np.int64), (w * rat).astype(np.int64)
    cy, cx = gen.integers(0, h, lam.size), gen.integers(0, w, lam.size)
    y0, y1 = np.clip(cy - ch // 2, 0, h), np.clip(cy + ch - ch // 2, 0, h)
    x0, x1 = np.clip(cx - cw // 2, 0, w), np.clip(cx + cw - cw // 2, 0, w)
    lam_true = 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)
    return np.stack([y0, x0, y1, x1], axis=1), lam_true


def _check_mixing(spec) -> None:
    if spec.mixup + spec.cutmix > 1.0 + 1e-9:
        raise ValueError(f"mixup + cutmix probabilities exceed 1 ({spec.mixup} + {spec.cutmix})")
    if spec.mixing and (spec.num_classes is None or spec.num_classes < 1):
        raise ValueError("mixup/cutmix need AugmentSpec.num_classes (soft labels); got None")
    if spec.mixup_alpha <= 0 or spec.cutmix_alpha <= 0:
        raise ValueError("mixup_alpha and cutmix_alpha must be > 0")
    if isinstance(spec.mix_group, bool) or not isinstance(spec.mix_group, int):
        raise ValueError(f"mix_group must be an int >= 2, got {spec.mix_group!r}")
    if spec.mix_group < 2:
        raise ValueError(
            f"mix_group must be >= 2 (a partner other than the row), got {spec.mix_group}"
        )


def _torch_step(x, y, ctx):
    spec = ctx.spec
    return mix(x, y, ctx.params, num_classes=spec.num_classes if spec.mixing else None)


OPS = (
    Op(
        "mixup",
        (
            Field("mixup", "float", 0.0, "probability of mixup with the partner.", "prob"),
            Field("mixup_alpha", "float", 0.8, "Beta(alpha, alpha) of the mixup weight."),
            Field("num_classes", "int | None", None, "classes; mixup/cutmix need it."),
            Field(
                "mix_group",
                "int",
                8,
                "samples per partner group (consecutive in the global order); a divisor of "
                "every per-rank batch size keeps partners the same for any world size.",
            ),
        ),
        doc="`x = λ x + (1 - λ) x[partner]`, `λ ~ Beta(α, α)`, labels likewise",
        sample=_mixing,
        validate=_check_mixing,
        examples={"mixup": {"mixup": 1.0, "num_classes": 4, "noise": 1.0}},
    ),
    Op(
        "cutmix",
        (
            Field("cutmix", "float", 0.0, "probability of a box pasted from the partner.", "prob"),
            Field("cutmix_alpha", "float", 1.0, "Beta(alpha, alpha) of the cutmix area."),
        ),
        doc="a box of area `≈ 1 - λ` pasted from the partner; `λ` corrected to the box area",
        examples={"cutmix": {"cutmix": 1.0, "num_classes": 4, "crop": 1.0}},
    ),
)
STEPS = (Step("mix", 70, _torch_step),)
