"""What ``recipes/compare_finetune.py`` prints and saves: the machine, the table, the ratios."""

from __future__ import annotations

import dataclasses
import os
import platform
from typing import Any

import torch

__all__ = ["machine_line", "report", "table"]


def machine_line(device: str) -> str:
    """The GPU, or the CPU with its load average (the background load), and torch."""
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return f"CPU ({cpu}, {os.cpu_count()} cores{load}, no GPU used), torch {torch.__version__}"


def table(spec: Any, results: dict[str, dict[str, Any]]) -> str:
    """One row per setting: model, input, parameters, rates, step times, peak memory."""
    c, h, w = spec.feature_shape
    inputs = {
        "finetune": (f"{spec.model} + head", f"images 3x{spec.img_size}x{spec.img_size}"),
        "loffta": (f"{spec.classifier} classifier", f"features {c}x{h}x{w} fp16"),
    }
    mem = "peak mem MB (cuda alloc)" if spec.device.startswith("cuda") else "peak RSS growth MB"
    rows = [
        f"{'setting':<9} {'model':<30} {'input':<24} {'params M':>8} {'samples/s':>10} "
        f"{'step ms':>8} {'best ms':>8} {mem:>24}"
    ]
    for name, r in results.items():
        model, inp = inputs[name]
        rows.append(
            f"{name:<9} {model:<30} {inp:<24} {r['params_m']:>8.1f} {r['samples_per_s']:>10.2f} "
            f"{r['step_ms']:>8.1f} {r['best_step_ms']:>8.1f} {r['peak_mem_mb']:>24.0f}"
        )
    return "\n".join(rows)


def report(base: Any, results: dict[str, dict], machine: str) -> dict[str, Any]:
    """Prints the table and the ratios of both settings' results; the report."""
    ft, lt = results["finetune"], results["loffta"]
    speedup = lt["samples_per_s"] / ft["samples_per_s"]
    best = ft["best_step_ms"] / lt["best_step_ms"]
    memory = ft["peak_mem_mb"] / max(lt["peak_mem_mb"], 1e-6)
    print(f"machine: {machine}")
    print(table(base, results))
    print(
        f"LOFF-TA vs fine-tuning: {speedup:.2f}x faster (median step; {best:.2f}x on the best "
        f"step), {memory:.2f}x less peak memory"
    )
    print(f"RATIO speedup={speedup:.3f} memory_ratio={memory:.3f} speedup_best={best:.3f}")
    return {
        "machine": machine,
        "spec": dataclasses.asdict(base),
        "results": results,
        "speedup": speedup,
        "speedup_best": best,
        "memory_ratio": memory,
    }
