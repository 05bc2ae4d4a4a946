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
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AugmentSpec", "PRESETS", "TRIVIAL_OPS"]

#: Operations TrivialAugment mode may pick from (one per sample, plus "identity").
TRIVIAL_OPS = ("identity", "hflip", "vflip", "rot90", "crop", "noise", "jitter", "channel_dropout")

_PROB_FIELDS = (
    "hflip",
    "vflip",
    "rot90",
    "crop",
    "noise",
    "jitter",
    "channel_dropout",
    "mixup",
    "cutmix",
)
_PAIR_FIELDS = ("out_size", "crop_scale", "crop_ratio", "noise_std", "pool_size")


@dataclass(frozen=True)
class AugmentSpec:
    """What to do to each feature map; every probability is per sample (per view).

    Attributes:
        views: independently augmented views returned per input sample.
        out_size: output grid ``(H, W)`` of the crop/resize step; ``None`` keeps the
            (pooled) input grid.
        hflip: probability of a horizontal flip.
        vflip: probability of a vertical flip.
        rot90: probability of rotating by a random multiple of 90 degrees
            (k in {1, 2, 3}; only k=2 on non-square grids).
        crop: probability of a random resized crop (else the whole map is resized).
        crop_scale: range of the crop area as a fraction of the map area.
        crop_ratio: range of the crop aspect ratio (width / height), log-uniform.
        noise: probability of additive Gaussian noise.
        noise_std: range of the noise std, relative to each channel's manifest std.
        pool_factor: integer average-pooling factor applied first (1 = off).
        pool_size: adaptive average pooling to this grid, applied first (``None`` = off).
        jitter: probability of FroFA-style brightness/contrast jitter.
        brightness: max brightness shift, in units of the channel std.
        contrast: max relative contrast change around the channel mean.
        jitter_per_channel: draw jitter independently per channel (FroFA "c^2" style).
        channel_dropout: probability that channel dropout is applied to a sample.
        channel_dropout_rate: fraction of channels zeroed when it is applied.
        mixup: probability that a sample is mixed up with its batch partner.
        mixup_alpha: Beta(alpha, alpha) parameter of the mixup weight.
        cutmix: probability that a sample gets a box pasted from its partner.
        cutmix_alpha: Beta(alpha, alpha) parameter of the cutmix area.
        num_classes: number of classes; required by mixup/cutmix (soft labels).
        normalize: normalise by the manifest's per-channel mean/std at the end.
        trivial: TrivialAugment mode: per sample, one op from ``trivial_ops`` with a
            uniform magnitude in [0, 1] of its configured maximum.
        trivial_ops: the ops TrivialAugment mode picks from (see ``TRIVIAL_OPS``).
        out_dtype: output dtype name ("float32", ...); ``None`` keeps the input dtype.
        target_similarity: mean cosine similarity between original and augmented maps that
            the loader calibrates noise/jitter magnitudes to at start
            (:mod:`loffdata.augment.similarity`); ``None``: magnitudes as given.
    """

    views: int = 1
    out_size: tuple[int, int] | None = None
    hflip: float = 0.0
    vflip: float = 0.0
    rot90: float = 0.0
    crop: float = 0.0
    crop_scale: tuple[float, float] = (0.25, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    noise: float = 0.0
    noise_std: tuple[float, float] = (0.0, 0.25)
    pool_factor: int = 1
    pool_size: tuple[int, int] | None = None
    jitter: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    jitter_per_channel: bool = True
    channel_dropout: float = 0.0
    channel_dropout_rate: float = 0.1
    mixup: float = 0.0
    mixup_alpha: float = 0.8
    cutmix: float = 0.0
    cutmix_alpha: float = 1.0
    num_classes: int | None = None
    normalize: bool = False
    trivial: bool = False
    trivial_ops: tuple[str, ...] = field(default=TRIVIAL_OPS)
    out_dtype: str | None = None
    target_similarity: float | None = None

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
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(base) - known)
        if unknown:
            close = {
                u: difflib.get_close_matches(u, sorted(known), n=1, cutoff=0.6) for u in unknown
            }
            hints = ", ".join(f"{u} -> {c[0]}" for u, c in close.items() if c)
            raise ValueError(
                f"unknown augmentation fields {unknown}{f' (did you mean {hints}?)' if hints else ''}; "
                f"valid fields: {sorted(known)}"
            )
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
        probs = [getattr(self, name) for name in _PROB_FIELDS]
        shape = self.pool_factor == 1 and self.pool_size is None and self.out_size is None
        return not any(probs) and shape and not (self.normalize or self.trivial) and self.views == 1

    @property
    def mixing(self) -> bool:
        """Whether mixup or cutmix can change labels (labels become soft)."""
        return self.mixup > 0 or self.cutmix > 0


def _as_tuple(name: str, value: Any) -> Any:
    if isinstance(value, list) and (name in _PAIR_FIELDS or name == "trivial_ops"):
        return tuple(value)
    return value


def _validate(spec: AugmentSpec) -> None:
    for name in _PROB_FIELDS:
        p = getattr(spec, name)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"AugmentSpec.{name} is a probability, got {p!r}")
    if spec.mixup + spec.cutmix > 1.0 + 1e-9:
        raise ValueError(f"mixup + cutmix probabilities exceed 1 ({spec.mixup} + {spec.cutmix})")
    if spec.mixing and (spec.num_classes is None or spec.num_classes < 1):
        raise ValueError("mixup/cutmix need AugmentSpec.num_classes (soft labels); got None")
    if spec.views < 1:
        raise ValueError(f"AugmentSpec.views must be >= 1, got {spec.views}")
    if spec.pool_factor < 1:
        raise ValueError(f"AugmentSpec.pool_factor must be >= 1, got {spec.pool_factor}")
    if spec.pool_factor > 1 and spec.pool_size is not None:
        raise ValueError("set either pool_factor or pool_size, not both")
    _check_range("crop_scale", spec.crop_scale, 0.0, 1.0, open_low=True)
    _check_range("crop_ratio", spec.crop_ratio, 0.0, math.inf, open_low=True)
    _check_range("noise_std", spec.noise_std, 0.0, math.inf)
    for name in ("out_size", "pool_size"):
        size = getattr(spec, name)
        if size is not None and (len(size) != 2 or min(size) < 1):
            raise ValueError(f"AugmentSpec.{name} must be (H, W) with H, W >= 1, got {size!r}")
    _validate_rest(spec)


def _validate_rest(spec: AugmentSpec) -> None:
    if not 0.0 <= spec.channel_dropout_rate <= 1.0:
        raise ValueError(f"channel_dropout_rate must be in [0, 1], got {spec.channel_dropout_rate}")
    if spec.brightness < 0 or not 0 <= spec.contrast < 1:
        raise ValueError(
            f"need brightness >= 0 and 0 <= contrast < 1, got {spec.brightness}, {spec.contrast}"
        )
    if spec.mixup_alpha <= 0 or spec.cutmix_alpha <= 0:
        raise ValueError("mixup_alpha and cutmix_alpha must be > 0")
    if spec.target_similarity is not None and not 0.0 < spec.target_similarity < 1.0:
        raise ValueError(
            f"target_similarity must be in (0, 1) or None, got {spec.target_similarity!r}"
        )
    bad = sorted(set(spec.trivial_ops) - set(TRIVIAL_OPS))
    if bad or not spec.trivial_ops:
        raise ValueError(f"trivial_ops must be a non-empty subset of {TRIVIAL_OPS}, bad: {bad}")
    if spec.out_dtype not in (None, "float16", "float32", "bfloat16"):
        raise ValueError(
            f"out_dtype must be None, 'float16', 'float32' or 'bfloat16', got {spec.out_dtype!r}"
        )


def _check_range(
    name: str, rng: tuple[float, float], lo: float, hi: float, *, open_low: bool = False
) -> None:
    ok = (
        len(rng) == 2
        and rng[0] <= rng[1]
        and rng[1] <= hi
        and (rng[0] > lo if open_low else rng[0] >= lo)
    )
    if not ok:
        raise ValueError(
            f"AugmentSpec.{name} must be an ordered (low, high) pair within [{lo}, {hi}], got {rng!r}"
        )


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
