"""Augmentation throughput per backend, measured in one run.

Prints samples/s and GB/s (input bytes) for the torch and DALI backends on CPU (DALI in
CPU-only mode) and, when a GPU is present, on CUDA, with ratios to torch CPU::

    python benchmarks/bench_augment.py              # batch 64 of 768x16x16 and 1024x32x32 fp16
    python benchmarks/bench_augment.py --quick      # tiny smoke run (CI)
    python benchmarks/bench_augment.py --per-op     # one row per op example of the registry
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(
    0, str(Path(__file__).resolve().parents[1])
)  # run from a checkout without installing

from loffdata.augment import Augmenter, AugmentSpec  # noqa: E402
from loffdata.augment.dali_backend import dali_available  # noqa: E402
from loffdata.augment.registry import EXAMPLES  # noqa: E402

FULL_SHAPES = [(768, 16, 16), (1024, 32, 32)]
QUICK_SHAPES = [(32, 8, 8)]


def targets() -> list[tuple[str, str]]:
    """(backend, device) pairs available on this machine."""
    out = [("torch", "cpu")]
    if dali_available():
        out.append(("dali", "cpu"))
    if torch.cuda.is_available():
        out.append(("torch", "cuda"))
        if dali_available():
            out.append(("dali", "cuda"))
    return out


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure(
    spec: AugmentSpec,
    backend: str,
    device: str,
    shape: tuple[int, int, int],
    *,
    batch: int,
    iters: int,
    warmup: int = 2,
) -> float:
    """Seconds per batch (median-free mean over ``iters`` after ``warmup``)."""
    c, h, w = shape
    aug = Augmenter(spec, backend=backend, device=device, mean=np.zeros(c), std=np.ones(c))
    x = torch.randn(batch, c, h, w, device=device).half()
    for i in range(warmup):
        aug(x, indices=np.arange(batch) + i * batch, epoch=0)
    _sync(device)
    start = time.perf_counter()
    for i in range(iters):
        aug(x, indices=np.arange(batch) + i * batch, epoch=1)
    _sync(device)
    return (time.perf_counter() - start) / iters


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--preset", default="loffta")
    parser.add_argument("--per-op", action="store_true", help="each op example of the registry")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--iters", type=int, default=None)
    return parser.parse_args(argv)


def _specs(args: argparse.Namespace) -> dict[str, AugmentSpec]:
    if not args.per_op:
        return {args.preset: AugmentSpec.preset(args.preset)}
    return {name: AugmentSpec.from_dict(fields) for name, fields in sorted(EXAMPLES.items())}


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    batch = args.batch or (4 if args.quick else 64)
    iters = args.iters or (2 if args.quick else 10)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(
        f"# preset={args.preset} per_op={args.per_op} batch={batch} iters={iters} fp16 | "
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"cuda={torch.cuda.is_available()}"
    )
    print(
        f"{'spec':>16} {'shape':>14} {'backend':>8} {'device':>6} {'samples/s':>10} "
        f"{'GB/s':>7} {'vs torch-cpu':>12}"
    )
    for name, spec in _specs(args).items():
        for shape in QUICK_SHAPES if args.quick else FULL_SHAPES:
            _rows(name, spec, shape, batch=batch, iters=iters)


def _rows(name: str, spec: AugmentSpec, shape, *, batch: int, iters: int) -> None:
    base = None
    for backend, device in targets():
        sec = measure(spec, backend, device, shape, batch=batch, iters=iters)
        rate = batch / sec
        gbs = batch * int(np.prod(shape)) * 2 / sec / 1e9
        base = base or rate
        print(
            f"{name:>16} {'x'.join(map(str, shape)):>14} {backend:>8} {device:>6} "
            f"{rate:>10.0f} {gbs:>7.2f} {rate / base:>11.2f}x"
        )


if __name__ == "__main__":
    main()
