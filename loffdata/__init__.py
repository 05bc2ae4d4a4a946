"""loffdata: high-throughput data loading for training on cached foundation-model features.

The public names below are imported lazily, so ``import loffdata`` stays light: it imports
neither torch-heavy modules nor NVIDIA DALI until they are used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "LoffError": "loffdata.errors",
    "CodecError": "loffdata.errors",
    "FormatError": "loffdata.errors",
    "ManifestError": "loffdata.errors",
    "ShardReadError": "loffdata.errors",
    "SampleError": "loffdata.errors",
    "Quantized": "loffdata.codec",
    "Sample": "loffdata.format",
    "Manifest": "loffdata.manifest",
    "ShardWriter": "loffdata.writer",
    "WriterConfig": "loffdata.writer",
    "write_dataset": "loffdata.writer",
    "StreamingDataset": "loffdata.dataset",
    "LoffLoader": "loffdata.loader",
    "AugmentSpec": "loffdata.augment",
    "Augmenter": "loffdata.augment",
    "ExtractConfig": "loffdata.extract",
    "extract": "loffdata.extract",
    "create_classifier": "loffdata.models",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'loffdata' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
