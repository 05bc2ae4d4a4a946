"""Deriving a pooled int8 cache: ``loffdata convert`` from the fp16 cache vs re-extraction.

    python benchmarks/bench_convert.py [--quick] [--n 1000] [--pool 2] [--dtype int8]

Builds the demo's fp16 cache of the built-in shapes data (``tools/shard.py`` defaults:
vit_tiny_patch16_224, random weights), then times, in one run, (a) extraction again with
``pool``/``dtype`` (what a user without convert does) and (b) ``convert`` of the fp16
cache to the same variant. Both are end to end (model creation included for (a)).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import warnings

import fire

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from loffdata.extract.pipeline import ExtractConfig, RandomWeightsWarning, extract  # noqa: E402
from loffdata.ops.convert import ConvertConfig, convert  # noqa: E402

__all__ = ["main"]


def _extract(out: str, n: int, img_size: int | None, **kw) -> float:
    cfg = ExtractConfig(
        out=out, shapes_counts={"train": n}, img_size=img_size, progress=False, **kw
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        extract(cfg)
    return time.perf_counter() - start


def main(
    *,
    quick: bool = False,
    n: int = 1000,
    pool: int = 2,
    dtype: str = "int8",
    img_size: int | None = None,
    root: str | None = None,
) -> None:
    """Prints the seconds of re-extraction and of convert, and their ratio."""
    if quick:
        n, img_size = 32, img_size or 64
    root = root or tempfile.mkdtemp(prefix="bench_convert-")
    _extract(f"{root}/fp16", n, img_size, dtype="float16")
    t_extract = _extract(f"{root}/reextract", n, img_size, dtype=dtype, pool=pool)
    start = time.perf_counter()
    m = convert(
        f"{root}/fp16/train",
        f"{root}/converted",
        ConvertConfig(pool=pool, dtype=dtype),
        progress=False,
    )
    t_convert = time.perf_counter() - start
    print(f"{n} samples -> {m.features.dtype}{list(m.features.shape)}, pool {pool}")
    print(
        f"re-extraction with --pool {pool} --dtype {dtype}: {t_extract:.2f} s ({n / t_extract:.0f} "
        "samples/s)"
    )
    print(
        f"convert from the fp16 cache:            {t_convert:.2f} s ({n / t_convert:.0f} samples/s)"
    )
    print(f"convert / re-extraction speed: {t_extract / t_convert:.1f}x")


if __name__ == "__main__":
    fire.Fire(main)
