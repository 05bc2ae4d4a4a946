"""Fine-tuning a foundation model vs LOFF-TA on its cached features: speed and memory.

Both settings are measured in one run, on the same machine and synthetic data, and
printed as a table with ratios (the paper's comparison, at a scale a CPU can run):

* ``finetune``: the timm foundation model (random weights unless ``--pretrained``) plus a
  classification head, trained end-to-end on augmented uint8 images of ``1.14 x img_size``
  pixels (:mod:`compare_augment`).
* ``loffta``: the DeiT-style classifier (:func:`loffdata.train.models.create_classifier`) on
  float16 feature maps of exactly the shape the model produces, augmented as tensors.

Each step is augment -> forward -> cross-entropy -> backward -> AdamW step; image decoding
and feature reading are *not* timed (both sides take batches from a small in-memory pool),
which favours fine-tuning. Throughput is ``batch_size / median step time`` after
``warmup`` untimed steps; ``best ms`` and ``speedup_best`` use the fastest step, which
other jobs on a shared machine disturb less. Every setting runs in a fresh subprocess,
where its peak memory is measured: ``torch.cuda.max_memory_allocated`` on CUDA; on the
CPU the growth of the peak resident set size after the imports (``ru_maxrss``: weights,
gradients, optimizer state, activations and data, not the torch/timm imports).

Usage::

    python recipes/compare_finetune.py          # ViT-B/16 @224 vs DeiT-S, ~1-2 min on 2 cores
    python recipes/compare_finetune.py --quick  # ViT-S/16 @112 vs DeiT-Ti/4, ~15 s smoke run
    python recipes/compare_finetune.py --model vit_base_patch14_dinov2 --device cuda \
        --batch_size 64 --steps 20
"""

from __future__ import annotations

import dataclasses
import json
import os
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # its sibling, when imported

from compare_augment import _resample, augment_features, augment_images  # noqa: E402, F401
from compare_report import machine_line  # noqa: E402
from compare_report import report as summary  # noqa: E402

from loffdata.cli import parse as cliutil  # noqa: E402
from loffdata.devices import resolve_auto  # noqa: E402
from loffdata.train.models import create_classifier  # noqa: E402
from loffdata.train.utils import create_optimizer, loss_fn  # noqa: E402

__all__ = [
    "BenchSpec",
    "CompareConfig",
    "augment_features",
    "augment_images",
    "compare",
    "feature_shape",
    "run_setting",
]

SETTINGS = ("finetune", "loffta")
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


def _resolve(quick: bool, given: dict[str, Any]) -> dict[str, Any]:
    preset = PRESETS["quick" if quick else "default"]
    return {k: (preset[k] if given.get(k) is None else given[k]) for k in preset}


@dataclass(frozen=True)
class CompareConfig:
    """Measure fine-tuning vs LOFF-TA and print a table with the ratios.

    ``None`` takes the preset's value (``PRESETS``: a full run, or ``--quick``).

    Attributes:
        model: timm foundation model.
        img_size: image resolution.
        classifier: LOFF-TA classifier kind (``deit_s``, ``deit_t``, ``linear``).
        batch_size: samples per step on both sides.
        steps: timed steps per setting.
        warmup: untimed steps first.
        num_classes: classes of the synthetic task.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        pretrained: load the foundation model's hub weights (needs network or a warm cache).
        amp: bf16 autocast on CUDA (both settings).
        threads: torch threads per run (``None`` in the preset: all cores; ``--quick``: 1,
            as other jobs on a shared machine stall the threads of a small model most).
        seed: seed of the synthetic data and augmentation.
        quick: smoke-test sizes (~15 s on 2 CPU cores).
        out: write the results, the settings and the machine to this JSON file.
    """

    model: str | None = None
    img_size: int | None = None
    classifier: str | None = None
    batch_size: int | None = None
    steps: int | None = None
    warmup: int | None = None
    num_classes: int = 100
    device: str = "auto"
    pretrained: bool = False
    amp: bool = True
    threads: int | None = None
    seed: int = 0
    quick: bool = False
    out: str | None = None


def compare(config: CompareConfig | None = None, **changes: Any) -> dict[str, Any]:
    """Measures fine-tuning vs LOFF-TA and prints a table with the ratios.

    Args:
        config: the comparison (:class:`CompareConfig`; its defaults when ``None``).
        **changes: fields of ``config`` to change.

    Returns:
        ``{"machine", "spec", "results", "speedup", "speedup_best", "memory_ratio"}``; the
        speed-up is the ratio of median step times, ``speedup_best`` that of the fastest
        steps (less sensitive to other jobs on a shared machine).
    """
    c = dataclasses.replace(config or CompareConfig(), **changes)
    base = _base_spec(c)
    machine = machine_line(base.device)  # before the runs: the load average is the background load
    results = {s: _run_in_subprocess(dataclasses.replace(base, setting=s)) for s in SETTINGS}
    report = summary(base, results, machine)
    if c.out:
        Path(c.out).parent.mkdir(parents=True, exist_ok=True)
        Path(c.out).write_text(json.dumps(report, indent=2))
    return report


def _base_spec(c: CompareConfig) -> BenchSpec:
    """The settings both sides share, the preset's where ``c`` leaves them out."""
    names = ("model", "img_size", "classifier", "batch_size", "steps", "warmup", "threads")
    opts = _resolve(c.quick, {k: getattr(c, k) for k in names})
    return BenchSpec(
        setting="finetune",
        feature_shape=feature_shape(opts["model"], opts["img_size"]),
        num_classes=c.num_classes,
        device=resolve_auto(c.device),
        pretrained=c.pretrained,
        amp=c.amp,
        seed=c.seed,
        **{**opts, "threads": opts["threads"] or os.cpu_count() or 1},
    )


def _cli(argv: list[str]) -> None:
    """Checks every flag (the fields of :class:`CompareConfig`), then compares."""
    options = cliutil.options_from_dataclass(CompareConfig)
    prog, doc = "recipes/compare_finetune.py", CompareConfig.__doc__
    config = cliutil.parse_config(CompareConfig, options, argv, prog=prog, doc=doc)
    if config is not None:
        compare(config)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "_worker":
        _worker(sys.argv[2])
    else:
        cliutil.run(lambda: _cli(sys.argv[1:]))
