"""Augmentation strength by similarity (after RangeAugment): one target, not hand-set ranges.

``AugmentSpec(target_similarity=0.8)`` asks for noise and jitter magnitudes such that the
mean cosine similarity between a feature map and its augmented view is 0.8, on a sample of
the cache. :func:`calibrate` finds one factor ``f`` that scales the spec's magnitudes
together -- ``noise_std`` (both ends), ``brightness``, ``contrast`` (capped below 1) -- by
bisection: with the same seeded draws for every trial the noise grows linearly with ``f``,
so the similarity falls monotonically. The spec's other operations (flips, crops, pooling,
dropout ...) stay as they are and set the similarity at ``f = 0``; a target above it cannot
be reached and is refused. The similarity of a sample is the cosine between its flattened
augmented view and the same map through the spec's deterministic steps only (pooling,
resize to ``out_size``, normalisation), so only what the augmentation changes is measured.

When a spec's magnitudes are all zero, the search scales the unit magnitudes
``noise_std = (0, 1)``, ``brightness = 0.5``, ``contrast = 0.5`` instead. Noise or jitter
must have a probability above zero.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from loffdata.augment.augmenter import Augmenter
from loffdata.augment.registry import OPS
from loffdata.augment.spec import AugmentSpec

__all__ = ["calibrate", "mean_similarity", "scaled"]

#: the reference view: every op with a probability off (from the registry), one view
_RANDOM_OFF = {o.name: 0.0 for o in OPS if o.switch} | {"trivial": False, "views": 1}
_MAX_CONTRAST = 0.99


def _base(spec: AugmentSpec) -> tuple[tuple[float, float], float, float]:
    if spec.noise_std[1] > 0 or spec.brightness > 0 or spec.contrast > 0:
        return spec.noise_std, spec.brightness, spec.contrast
    return (0.0, 1.0), 0.5, 0.5


def scaled(spec: AugmentSpec, factor: float) -> AugmentSpec:
    """``spec`` with its noise and jitter magnitudes multiplied by ``factor``."""
    (lo, hi), b, c = _base(spec)
    return spec.replace(
        noise_std=(lo * factor, hi * factor),
        brightness=b * factor,
        contrast=min(c * factor, _MAX_CONTRAST),
        target_similarity=None,
    )


def mean_similarity(
    spec: AugmentSpec,
    x: torch.Tensor,
    *,
    seed: int = 0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> float:
    """Mean cosine similarity between each map of ``x`` and its augmented views under ``spec``."""
    indices = np.arange(x.shape[0])
    kw: dict[str, Any] = {
        "backend": "torch",
        "device": x.device,
        "seed": seed,
        "mean": mean,
        "std": std,
    }
    aug, _ = Augmenter(spec.replace(num_classes=None, mixup=0.0, cutmix=0.0), **kw)(
        x, indices=indices
    )
    ref, _ = Augmenter(spec.replace(**_RANDOM_OFF, num_classes=None), **kw)(x, indices=indices)
    ref = ref.repeat_interleave(spec.views, dim=0)
    cos = torch.nn.functional.cosine_similarity(
        aug.flatten(1).float(), ref.flatten(1).float(), dim=1
    )
    return float(cos.mean())


def calibrate(
    spec: AugmentSpec,
    x: torch.Tensor,
    *,
    seed: int = 0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    tol: float = 0.002,
    max_iter: int = 40,
) -> tuple[AugmentSpec, dict]:
    """Scale ``spec``'s noise/jitter magnitudes to hit ``spec.target_similarity`` on ``x``.

    Args:
        spec: a spec with ``target_similarity`` set.
        x: ``(N, C, H, W)`` sample of the cache (unaugmented).
        seed, mean, std: as the loader's :class:`~loffdata.augment.Augmenter` gets them.
        tol: stop once the similarity is within ``tol`` of the target.
        max_iter: bisection steps at most.

    Returns:
        ``(calibrated spec, record)``; the record (target, achieved, factor, noise_std,
        brightness, contrast, samples, iterations) goes into the recipe's run config.

    Raises:
        ValueError: no target, no noise or jitter to scale, or an unreachable target.
    """
    target = _target(spec)

    def sim(f: float) -> float:
        return mean_similarity(scaled(spec, f), x, seed=seed, mean=mean, std=std)

    top = sim(0.0)
    if top < target - tol:
        raise ValueError(
            f"target_similarity {target} is out of reach: the spec's other operations alone "
            f"give {top:.3f} on this sample"
        )
    f, s, it = _bisect(sim, target, tol=tol, max_iter=max_iter)
    out = scaled(spec, f).replace(target_similarity=target)
    return out, _record(out, achieved=s, factor=f, samples=int(x.shape[0]), iterations=it)


def _target(spec: AugmentSpec) -> float:
    if spec.target_similarity is None:
        raise ValueError("calibrate needs AugmentSpec.target_similarity")
    if spec.noise == 0 and spec.jitter == 0:
        raise ValueError(
            "target_similarity scales noise and jitter: set AugmentSpec.noise or jitter > 0"
        )
    return spec.target_similarity


def _record(out: AugmentSpec, *, achieved: float, factor: float, **counts: int) -> dict:
    return {
        "target": out.target_similarity,
        "achieved": achieved,
        "factor": factor,
        "noise_std": list(out.noise_std),
        "brightness": out.brightness,
        "contrast": out.contrast,
        **counts,
    }


def _bisect(
    sim: Callable[[float], float], target: float, *, tol: float, max_iter: int
) -> tuple[float, float, int]:
    """The factor ``f`` with ``sim(f)`` within ``tol`` of ``target`` (``sim`` falls with ``f``):
    doubling until below the target, then bisection. Returns ``(f, sim(f), bisection steps)``."""
    lo, hi, it = 0.0, 1.0, 0
    while sim(hi) > target and hi < 1e6:
        lo, hi = hi, hi * 2
    f, s = hi, sim(hi)
    while abs(s - target) > tol and it < max_iter:
        f = 0.5 * (lo + hi)
        s = sim(f)
        lo, hi = (f, hi) if s > target else (lo, f)
        it += 1
    return f, s, it
