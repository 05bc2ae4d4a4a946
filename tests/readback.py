"""Reading a written split back for tests: every sample in manifest order, features as float32."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from loffdata.format.codec import Quantized
from loffdata.format.manifest import Manifest
from loffdata.format.sample import decode_sample
from loffdata.format.tar import iter_sample_members


def read_split(url: str | Path) -> tuple[Manifest, list]:
    """The manifest and all samples of a written split (local), in manifest order."""
    manifest = Manifest.load(str(url))
    samples = []
    for shard in manifest.shard_urls(str(url)):
        with open(shard, "rb") as f:
            samples += [
                decode_sample(k, m, shard=shard) for k, m in iter_sample_members(f, shard=shard)
            ]
    return manifest, samples


def as_float(x) -> np.ndarray:
    """Features as float32 (int8 caches dequantised)."""
    return x.dequantize() if isinstance(x, Quantized) else np.asarray(x, dtype=np.float32)
