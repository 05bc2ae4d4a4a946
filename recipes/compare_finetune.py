"""Fine-tuning a foundation model vs LOFF-TA on its cached features: speed and memory.

Both settings are measured in one run, on the same machine and synthetic data, and
printed as a table with ratios (the paper's comparison, at a scale a CPU can run):

* ``finetune``: the timm foundation model (random weights unless ``--pretrained``) plus a
  classification head, trained end-to-end on augmented images: batched random resized
  crop + horizontal flip with torch ops (``affine_grid``/``grid_sample``) from uint8
  images of ``1.14 x img_size`` pixels, then mean/std normalisation.
* ``loffta``: the DeiT-style classifier (:func:`loffdata.train.models.create_classifier`) on
  float16 feature maps of exactly the shape the model produces (``C = embed dim``,
  ``grid = img_size / patch``), with tensor augmentation in torch: random resized crop
  back to the grid + flip (one ``grid_sample``) + additive Gaussian noise.

Each step is augment -> forward -> cross-entropy -> backward -> AdamW step; image decoding
and feature reading are *not* timed (both sides take batches from a small in-memory pool),
which favours fine-tuning. Throughput is ``batch_size / median step time`` after
``warmup`` untimed steps; ``best ms`` and ``speedup_best`` use the fastest step instead,
which other jobs on a shared machine disturb less. Every setting runs in a fresh subprocess, so one cannot inherit
the other's allocator state, and peak memory is measured there:

* CUDA: ``torch.cuda.max_memory_allocated`` (tensors only, reset before the model is built).
* CPU: growth of the process's peak resident set size, ``ru_maxrss`` at the end minus
  ``ru_maxrss`` after the imports: weights, gradients, optimizer state, activations and
  data, but not the torch/timm import footprint. (``tracemalloc`` does not see torch's
  allocations.)

Usage::

    python recipes/compare_finetune.py                 # ViT-B/16 @224 vs DeiT-S, ~1-2 min on 2 cores
    python recipes/compare_finetune.py --quick         # ViT-S/16 @112 vs DeiT-Ti/4, ~15 s smoke run
    python recipes/compare_finetune.py --model vit_base_patch14_dinov2 --device cuda --batch_size 64 --steps 20
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from loffdata.cli import parse as cliutil
from loffdata.devices import resolve_auto
from loffdata.train.models import create_classifier
from loffdata.train.utils import create_optimizer, loss_fn

__all__ = [
    "BenchSpec",
    "augment_features",
    "augment_images",
    "compare",
    "feature_shape",
    "run_setting",
]

SETTINGS = ("finetune", "loffta")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
#: defaults of a full run and of ``--quick``; an explicitly given option wins over both.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {
        "model": "vit_base_patch16_224",
        "img_size": 224,
        "classifier": "deit_s",
        "batch_size": 4,
        "steps": 4,
        "warmup": 1,
        "threads": None,
    },
    "quick": {
        "model": "vit_small_patch16_224",
        "img_size": 112,
        "classifier": "deit_t",
        "batch_size": 4,
        "steps": 2,
        "warmup": 1,
        "threads": 1,
    },
}
_RESULT_TAG = "RESULT_JSON "


@dataclass(frozen=True)
class BenchSpec:
    """One measured setting; travels to the subprocess as JSON.

    Attributes:
        setting: ``finetune`` or ``loffta``.
        model: timm foundation model name.
        img_size: image resolution (square) of the fine-tuning side.
        feature_shape: ``(C, H, W)`` the model produces at ``img_size``.
        classifier: LOFF-TA classifier kind (``deit_s``, ``deit_t``, ``linear``).
        batch_size: samples per step (same on both sides).
        steps: timed steps.
        warmup: untimed steps before them.
        num_classes: classes of the synthetic task.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        pretrained: load the foundation model's hub weights (needs network or a warm cache).
        threads: torch intra-op threads.
        amp: bf16 autocast (CUDA only).
        seed: seed of the synthetic data and augmentation.
    """

    setting: str
    model: str
    img_size: int
    feature_shape: tuple[int, int, int]
    classifier: str
    batch_size: int
    steps: int
    warmup: int
    num_classes: int
    device: str
    pretrained: bool
    threads: int
    amp: bool
    seed: int


# --------------------------------------------------------------------------- augmentation


def _crop_flip_theta(n: int, *, scale: tuple[float, float], gen: torch.Generator) -> torch.Tensor:
    """Per-sample affine matrices ``(n, 2, 3)`` of a random resized crop with a random hflip.

    Box area fraction ~ U(scale), aspect ratio log-uniform in [3/4, 4/3], position uniform;
    a negative x scale flips the crop horizontally.
    """
    area = torch.empty(n).uniform_(*scale, generator=gen)
    log_ratio = torch.empty(n).uniform_(-0.2877, 0.2877, generator=gen)  # log(3/4), log(4/3)
    w = (area * log_ratio.exp()).sqrt().clamp(max=1.0)
    h = (area / log_ratio.exp()).sqrt().clamp(max=1.0)
    cx = (torch.rand(n, generator=gen) * 2 - 1) * (1 - w)
    cy = (torch.rand(n, generator=gen) * 2 - 1) * (1 - h)
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    return theta


def _resample(x: torch.Tensor, theta: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    grid = F.affine_grid(
        theta.to(x.device, x.dtype), [x.shape[0], x.shape[1], *size], align_corners=False
    )
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def augment_images(images: torch.Tensor, *, size: int, gen: torch.Generator) -> torch.Tensor:
    """uint8 ``(N, 3, S, S)`` -> normalised float ``(N, 3, size, size)``: RRC(0.08, 1) + hflip."""
    x = images.float().div_(255)
    x = _resample(x, _crop_flip_theta(x.shape[0], scale=(0.08, 1.0), gen=gen), (size, size))
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def augment_features(
    feats: torch.Tensor, *, gen: torch.Generator, noise: float = 0.1
) -> torch.Tensor:
    """float16 ``(N, C, H, W)`` -> float32, same shape: RRC(0.25, 1) + hflip + Gaussian noise."""
    x = feats.float()
    x = _resample(x, _crop_flip_theta(x.shape[0], scale=(0.25, 1.0), gen=gen), tuple(x.shape[2:]))
    eps = torch.randn(x.shape, generator=gen).to(x.device)
    return x + noise * x.std() * eps


# --------------------------------------------------------------------------- settings


def feature_shape(model: str, img_size: int) -> tuple[int, int, int]:
    """``(C, H, W)`` of ``model``'s last spatial feature map at ``img_size``, on the meta device."""
    import timm

    with torch.device("meta"):
        net = _create_timm(timm, model, img_size=img_size, pretrained=False, num_classes=0)
        maps = net.forward_intermediates(
            torch.empty(1, 3, img_size, img_size),
            indices=1,
            intermediates_only=True,
            output_fmt="NCHW",
        )
    return tuple(int(d) for d in maps[-1].shape[1:])  # type: ignore[return-value]


def _create_timm(timm: Any, model: str, *, img_size: int, **kwargs: Any) -> torch.nn.Module:
    try:  # ViTs are created at img_size (position embeddings resampled)
        return timm.create_model(model, img_size=img_size, **kwargs)
    except TypeError:  # models without an img_size argument (CNNs)
        return timm.create_model(model, **kwargs)


def _build_finetune(spec: BenchSpec, gen: torch.Generator) -> tuple[torch.nn.Module, Callable]:
    import timm

    model = _create_timm(
        timm,
        spec.model,
        img_size=spec.img_size,
        pretrained=spec.pretrained,
        num_classes=spec.num_classes,
    )
    src = int(round(spec.img_size * 256 / 224))
    pool = torch.randint(
        0, 256, (2, spec.batch_size, 3, src, src), dtype=torch.uint8, generator=gen
    )
    pool = pool.to(spec.device)
    return model, lambda i: augment_images(pool[i % 2], size=spec.img_size, gen=gen)


def _build_loffta(spec: BenchSpec, gen: torch.Generator) -> tuple[torch.nn.Module, Callable]:
    c, h, w = spec.feature_shape
    model = create_classifier(
        spec.classifier, in_chans=c, grid=(h, w), num_classes=spec.num_classes, probe=False
    )
    pool = torch.randn((2, spec.batch_size, c, h, w), generator=gen).to(spec.device, torch.float16)
    return model, lambda i: augment_features(pool[i % 2], gen=gen)


def _train_steps(
    model: torch.nn.Module, batch: Callable, spec: BenchSpec, gen: torch.Generator
) -> list[float]:
    """Run ``warmup + steps`` training steps; return the wall time of the timed ones."""
    model.to(spec.device).train()
    opt = create_optimizer(model, lr=1e-4, weight_decay=0.05)
    labels = torch.randint(0, spec.num_classes, (spec.batch_size,), generator=gen).to(spec.device)
    amp = spec.amp and spec.device.startswith("cuda")
    times = []
    for i in range(spec.warmup + spec.steps):
        _sync(spec.device)
        start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(model(batch(i)), labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(spec.device)
        if i >= spec.warmup:
            times.append(time.perf_counter() - start)
    return times


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def run_setting(spec: BenchSpec) -> dict[str, Any]:
    """Measure one setting in this process (call it in a fresh one for a clean memory peak)."""
    torch.set_num_threads(spec.threads)
    gen = torch.Generator().manual_seed(spec.seed)
    cuda = spec.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats(spec.device)
    base_rss = _peak_rss_mb()
    build = _build_finetune if spec.setting == "finetune" else _build_loffta
    model, batch = build(spec, gen)
    times = _train_steps(model, batch, spec, gen)
    peak = (
        torch.cuda.max_memory_allocated(spec.device) / 2**20 if cuda else _peak_rss_mb() - base_rss
    )
    step = statistics.median(times)
    return {
        "setting": spec.setting,
        "samples_per_s": spec.batch_size / step,
        "step_ms": 1e3 * step,
        "best_step_ms": 1e3 * min(times),
        "step_ms_all": [1e3 * t for t in times],
        "peak_mem_mb": peak,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }


def _run_in_subprocess(spec: BenchSpec) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "_worker",
        json.dumps(dataclasses.asdict(spec)),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(_RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"{spec.setting} run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    return json.loads(lines[-1][len(_RESULT_TAG) :])


def _worker(spec_json: str) -> None:
    spec = json.loads(spec_json)
    spec["feature_shape"] = tuple(spec["feature_shape"])
    print(_RESULT_TAG + json.dumps(run_setting(BenchSpec(**spec))), flush=True)


# --------------------------------------------------------------------------- report


def _machine(device: str) -> str:
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return f"CPU ({cpu}, {os.cpu_count()} cores{load}, no GPU used), torch {torch.__version__}"


def _table(spec: BenchSpec, results: dict[str, dict[str, Any]]) -> str:
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


def _resolve(quick: bool, given: dict[str, Any]) -> dict[str, Any]:
    preset = PRESETS["quick" if quick else "default"]
    return {k: (preset[k] if given.get(k) is None else given[k]) for k in preset}


def compare(
    *,
    model: str | None = None,
    img_size: int | None = None,
    classifier: str | None = None,
    batch_size: int | None = None,
    steps: int | None = None,
    warmup: int | None = None,
    num_classes: int = 100,
    device: str = "auto",
    pretrained: bool = False,
    amp: bool = True,
    threads: int | None = None,
    seed: int = 0,
    quick: bool = False,
    out: str | None = None,
) -> dict[str, Any]:
    """Measure fine-tuning vs LOFF-TA and print a table with the ratios.

    Args:
        model: timm foundation model (default ``vit_base_patch16_224``; quick: ``vit_small_patch16_224``).
        img_size: image resolution (default 224; quick: 112).
        classifier: LOFF-TA classifier kind (default ``deit_s``; quick: ``deit_t``).
        batch_size: samples per step on both sides (default 4; quick: 8).
        steps: timed steps per setting (default 4; quick: 3).
        warmup: untimed steps first (default 1).
        num_classes: classes of the synthetic task.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        pretrained: load the foundation model's hub weights (needs network or a warm cache).
        amp: bf16 autocast on CUDA (both settings).
        threads: torch threads per run (default: all cores; quick: 1, because with
            every core in use, other jobs on a shared machine stall the threads'
            synchronisation points, which slows the many small ops of a small model most).
        seed: seed of the synthetic data and augmentation.
        quick: smoke-test sizes (~15 s on 2 CPU cores).
        out: write the results, the settings and the machine to this JSON file.

    Returns:
        ``{"machine", "spec", "results", "speedup", "speedup_best", "memory_ratio"}``; the
        speed-up is the ratio of median step times, ``speedup_best`` that of the fastest
        steps (less sensitive to other jobs on a shared machine).
    """
    opts = _resolve(
        quick,
        {
            "model": model,
            "img_size": img_size,
            "classifier": classifier,
            "batch_size": batch_size,
            "steps": steps,
            "warmup": warmup,
            "threads": threads,
        },
    )
    device = resolve_auto(device)
    base = BenchSpec(
        setting="finetune",
        feature_shape=feature_shape(opts["model"], opts["img_size"]),
        num_classes=num_classes,
        device=device,
        pretrained=pretrained,
        amp=amp,
        seed=seed,
        **{**opts, "threads": opts["threads"] or os.cpu_count() or 1},
    )
    machine = _machine(device)  # before the runs: the load average is the background load
    results = {s: _run_in_subprocess(dataclasses.replace(base, setting=s)) for s in SETTINGS}
    ft, lt = results["finetune"], results["loffta"]
    speedup = lt["samples_per_s"] / ft["samples_per_s"]
    best = ft["best_step_ms"] / lt["best_step_ms"]
    memory = ft["peak_mem_mb"] / max(lt["peak_mem_mb"], 1e-6)
    print(f"machine: {machine}")
    print(_table(base, results))
    print(
        f"LOFF-TA vs fine-tuning: {speedup:.2f}x faster (median step; {best:.2f}x on the best "
        f"step), {memory:.2f}x less peak memory"
    )
    print(f"RATIO speedup={speedup:.3f} memory_ratio={memory:.3f} speedup_best={best:.3f}")
    report = {
        "machine": machine,
        "spec": dataclasses.asdict(base),
        "results": results,
        "speedup": speedup,
        "speedup_best": best,
        "memory_ratio": memory,
    }
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=2))
    return report


def _cli(argv: list[str]) -> None:
    """Checks every flag (the keyword arguments of :func:`compare`), then compares."""
    values = cliutil.parse_command(
        argv,
        cliutil.options_from_function(compare),
        prog="recipes/compare_finetune.py",
        doc=compare.__doc__,
    )
    if values is not None:
        compare(**values)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "_worker":
        _worker(sys.argv[2])
    else:
        cliutil.run(lambda: _cli(sys.argv[1:]))
