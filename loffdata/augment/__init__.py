"""Tensor augmentation of cached feature maps (LOFF-TA, FroFA), torch and DALI backends.

Parameters are sampled on the host from (seed, epoch, sample index, view) and applied
on the device by either backend with identical semantics::

    from loffdata.augment import AugmentSpec, Augmenter
    aug = Augmenter(AugmentSpec.preset("loffta"), device="cuda", std=manifest_std)
    x, y = aug(x, y, indices=idx, epoch=epoch)

Submodules are imported lazily; DALI only when the DALI backend is used.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["AugmentSpec", "Augmenter", "Params", "sample_params", "PRESETS"]

_WHERE = {
    "AugmentSpec": "loffdata.augment.spec",
    "PRESETS": "loffdata.augment.spec",
    "Augmenter": "loffdata.augment.augmenter",
    "Params": "loffdata.augment.params",
    "sample_params": "loffdata.augment.params",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'loffdata.augment' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
