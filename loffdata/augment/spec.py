"""Augmentation specification: one small dataclass, presets, dict round trip.

An :class:`AugmentSpec` says *which* operations run and with which probabilities
and ranges; it holds no state. Build it from a preset, from a dict (e.g. parsed
YAML), and override any field with :meth:`AugmentSpec.replace`::

    spec = AugmentSpec.preset("loffta", views=2)
    spec = AugmentSpec.from_dict({"preset": "frofa", "hflip": 0.0})
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from typing import Any

from loffdata.augment.opkit import Field, Op
from loffdata.augment.registry import FIELDS, OPS, TRIVIAL_OPS

__all__ = ["AugmentSpec", "PRESETS", "TRIVIAL_OPS"]

_MODES = (
    Field("trivial", "bool", False, "TrivialAugment mode: one op of ``trivial_ops`` per row."),
    Field("trivial_ops", "tuple[str, ...]", TRIVIAL_OPS, "the ops TrivialAugment picks from."),
    Field(
        "target_similarity",
        "float | None",
        None,
        "mean cosine similarity the loader calibrates noise/jitter to "
        "(:mod:`loffdata.augment.similarity`); ``None``: magnitudes as given.",
    ),
)
_FIELDS = FIELDS + _MODES
_PAIR_FIELDS = tuple(f.name for f in _FIELDS if f.kind == "pair") + ("trivial_ops",)


@dataclasses.dataclass(frozen=True)
class AugmentSpec:
    # fields: written by tools/spec_fields.py from the op registry; do not edit by hand
    """What to do to each feature map; every probability is per sample (per view).

    Fields are declared by the ops (:mod:`loffdata.augment.registry`).

    Attributes:
        noise: probability of additive Gaussian noise.
        noise_std: range of the noise std, relative to each channel's manifest std.
        jitter: probability of FroFA brightness/contrast.
        brightness: max brightness shift, in channel stds.
        contrast: max relative contrast change around the mean.
        jitter_per_channel: draw jitter per channel (FroFA c^2).
        normalize: normalise by the manifest mean/std at the end.
        channel_dropout: probability of channel dropout.
        channel_dropout_rate: fraction of channels zeroed.
        cutout: probability of erasing one rectangle.
        cutout_size: range of the rectangle's side, as a fraction of each side of the grid.
        mixup: probability of mixup with the partner.
        mixup_alpha: Beta(alpha, alpha) of the mixup weight.
        num_classes: classes; mixup/cutmix need it.
        mix_group: samples per partner group (consecutive in the global order); a divisor of every
            per-rank batch size keeps partners the same for any world size.
        cutmix: probability of a box pasted from the partner.
        cutmix_alpha: Beta(alpha, alpha) of the cutmix area.
        rot90: probability of a random multiple of 90 degrees (k in {1, 2, 3}; only k=2 on
            non-square grids).
        views: independently augmented views returned per input sample.
        pool_factor: integer average-pooling factor applied first.
        pool_size: adaptive average pooling to this grid, applied first (``None`` = off).
        out_dtype: output dtype name; ``None``: input dtype.
        out_size: output grid (H, W).
        crop: probability of a random resized crop.
        crop_scale: crop area range.
        crop_ratio: crop W/H range.
        hflip: probability of a horizontal flip.
        vflip: probability of a vertical flip.
        trivial: TrivialAugment mode: one op of ``trivial_ops`` per row.
        trivial_ops: the ops TrivialAugment picks from.
        target_similarity: mean cosine similarity the loader calibrates noise/jitter to
            (:mod:`loffdata.augment.similarity`); ``None``: magnitudes as given.
    """

    noise: float = 0.0
    noise_std: tuple[float, float] = (0.0, 0.25)
    jitter: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    jitter_per_channel: bool = True
    normalize: bool = False
    channel_dropout: float = 0.0
    channel_dropout_rate: float = 0.1
    cutout: float = 0.0
    cutout_size: tuple[float, float] = (0.1, 0.4)
    mixup: float = 0.0
    mixup_alpha: float = 0.8
    num_classes: int | None = None
    mix_group: int = 8
    cutmix: float = 0.0
    cutmix_alpha: float = 1.0
    rot90: float = 0.0
    views: int = 1
    pool_factor: int = 1
    pool_size: tuple[int, int] | None = None
    out_dtype: str | None = None
    out_size: tuple[int, int] | None = None
    crop: float = 0.0
    crop_scale: tuple[float, float] = (0.25, 1.0)
    crop_ratio: tuple[float, float] = (0.75, 1.3333333333333333)
    hflip: float = 0.0
    vflip: float = 0.0
    trivial: bool = False
    trivial_ops: tuple[str, ...] = TRIVIAL_OPS
    target_similarity: float | None = None
    # end of the written fields

    def __post_init__(self) -> None:
        _validate(self)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> AugmentSpec:
        """Return preset ``name`` ("loffta", "frofa", "none") with fields overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown augmentation preset {name!r}; known: {sorted(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AugmentSpec:
        """Build a spec from a plain dict; a ``"preset"`` key starts from that preset."""
        data = dict(data)
        base = dict(PRESETS[data.pop("preset")]) if "preset" in data else {}
        if "preset" in base:
            raise ValueError("nested presets are not supported")
        base.update(data)
        _check_known(base)
        return cls(**{k: _as_tuple(k, v) for k, v in base.items()})

    def replace(self, **overrides: Any) -> AugmentSpec:
        """Return a copy with the given fields replaced (validated again)."""
        return AugmentSpec.from_dict({**self.to_dict(), **overrides})

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (tuples as lists), the inverse of :meth:`from_dict`."""
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @property
    def is_identity(self) -> bool:
        """Whether the spec changes no map (the ``"none"`` preset): no op can fire, no pooling,
        no resize, no normalisation, one view. ``out_dtype`` may still cast."""
        return not self.trivial and all(_idle(op, self) for op in OPS)

    @property
    def mixing(self) -> bool:
        """Whether mixup or cutmix can change labels (labels become soft)."""
        return self.mixup > 0 or self.cutmix > 0


def _idle(op: Op, spec: Any) -> bool:
    if op.idle is not None:
        return op.idle(spec)
    return not op.switch or getattr(spec, op.name) == 0


def _check_known(data: Mapping[str, Any]) -> None:
    known = {f.name for f in _FIELDS}
    unknown = sorted(set(data) - known)
    if not unknown:
        return
    close = {u: difflib.get_close_matches(u, sorted(known), n=1, cutoff=0.6) for u in unknown}
    hints = ", ".join(f"{u} -> {c[0]}" for u, c in close.items() if c)
    raise ValueError(
        f"unknown augmentation fields {unknown}{f' (did you mean {hints}?)' if hints else ''}; "
        f"valid fields: {sorted(known)}"
    )


def _as_tuple(name: str, value: Any) -> Any:
    if isinstance(value, list) and name in _PAIR_FIELDS:
        return tuple(value)
    return value


def _validate(spec: Any) -> None:
    for f in _FIELDS:
        p = getattr(spec, f.name)
        if f.kind == "prob" and not 0.0 <= p <= 1.0:
            raise ValueError(f"AugmentSpec.{f.name} is a probability, got {p!r}")
    for op in OPS:
        if op.validate is not None:
            op.validate(spec)
    if spec.target_similarity is not None and not 0.0 < spec.target_similarity < 1.0:
        raise ValueError(
            f"target_similarity must be in (0, 1) or None, got {spec.target_similarity!r}"
        )
    bad = sorted(set(spec.trivial_ops) - set(TRIVIAL_OPS))
    if bad or not spec.trivial_ops:
        raise ValueError(f"trivial_ops must be a non-empty subset of {TRIVIAL_OPS}, bad: {bad}")


#: Presets: plain dicts of field overrides over the defaults.
PRESETS: dict[str, dict[str, Any]] = {
    "none": {},
    # LOFF-TA's tensor augmentations: flips, random resized crop, Gaussian noise.
    "loffta": {
        "hflip": 0.5,
        "crop": 1.0,
        "crop_scale": (0.25, 1.0),
        "noise": 0.5,
        "noise_std": (0.0, 0.25),
    },
    # FroFA (Baer et al. 2024): per-channel brightness/contrast on frozen features, plus flips.
    "frofa": {
        "hflip": 0.5,
        "jitter": 1.0,
        "brightness": 0.5,
        "contrast": 0.2,
        "jitter_per_channel": True,
    },
}
