"""loffdata: high-throughput data loading for training on cached foundation-model features.

The public names below are imported lazily, so ``import loffdata`` stays light: it imports
neither torch-heavy modules nor NVIDIA DALI until they are used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str | tuple[str, str]] = {
    "LoffError": "loffdata.errors",
    "CodecError": "loffdata.errors",
    "FormatError": "loffdata.errors",
    "ManifestError": "loffdata.errors",
    "ShardReadError": "loffdata.errors",
    "SampleError": "loffdata.errors",
    "Quantized": "loffdata.format.codec",
    "Sample": "loffdata.format.sample",
    "Manifest": "loffdata.format.manifest",
    "ShardWriter": "loffdata.format.writer",
    "WriterConfig": "loffdata.format.writer",
    "write_dataset": "loffdata.format.writer",
    "RetryConfig": "loffdata.storage.retry",
    "StreamConfig": "loffdata.stream.streamconfig",
    "StreamingDataset": "loffdata.stream.dataset",
    "LoaderConfig": "loffdata.loader.loaderconfig",
    "LoffLoader": "loffdata.loader",
    "AugmentSpec": "loffdata.augment",
    "Augmenter": "loffdata.augment",
    "ExtractConfig": "loffdata.extract.extractconfig",
    "extract_features": ("loffdata.extract.pipeline", "extract"),
    "create_classifier": "loffdata.train.models",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    where = _EXPORTS.get(name)
    if where is None:
        raise AttributeError(f"module 'loffdata' has no attribute {name!r}")
    module, attr = where if isinstance(where, tuple) else (where, name)
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
