"""The sections of ``benchmarks/gpu_check.py``: each takes a :class:`Context`, returns a dict.

A section returns ``{"ok": bool, ...figures...}``; ``failures`` lists what did not match.
Every section also runs on the CPU at smoke sizes (``--smoke --device cpu``), so that the
script is exercised by the test suite; device-only measurements are then ``None``.
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np
import torch
from gpu_common import FULL, REPO, SMOKE, Context, make_cache
from gpu_loader_sections import h2d, loader, resize, standin, throughput

from loffdata.augment import Augmenter, AugmentSpec
from loffdata.augment.registry import EXAMPLES
from loffdata.augment.spec import PRESETS
from loffdata.loader import LoffLoader

__all__ = ["DTYPES", "FULL", "OPS", "ORDER", "SECTIONS", "SMOKE", "TOL", "Context", "markdown_rows"]

OPS = EXAMPLES  # every op's examples, from the augmentation registry
DTYPES = (torch.float16, torch.float32, torch.bfloat16)
TOL = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}


# -- equivalence -------------------------------------------------------------------------------


def _compare(
    ctx: Context, name: str, spec: AugmentSpec, dtype: torch.dtype, **dali_options
) -> dict | None:
    """DALI vs torch on the device for one spec; returns a failure record or None."""
    from loffdata.augment.dali_backend import DaliBackend

    side_stream = dali_options.pop("_side", False)
    c = ctx.sizes.eq_shape[0]
    mean, std = np.linspace(-0.5, 0.5, c), np.linspace(0.5, 2.0, c)
    ref = Augmenter(spec, backend="torch", device=ctx.device, mean=mean, std=std, seed=1)
    dali = Augmenter(spec, backend="dali", device=ctx.device, mean=mean, std=std, seed=1)
    dali.backend = DaliBackend(spec, mean=mean, std=std, **dali_options)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, *ctx.sizes.eq_shape, generator=g).to(dtype).to(ctx.device)
    y = (torch.arange(4) % 4).to(ctx.device)
    p = ref.params(np.arange(10, 14), epoch=2, shape=ctx.sizes.eq_shape)
    a, ya = ref.apply(x, y, p)
    side = torch.cuda.Stream(ctx.device) if ctx.cuda and side_stream else None
    with torch.cuda.stream(side) if side is not None else contextlib.nullcontext():
        b, yb = dali.apply(x, y, p)
    if side is not None:
        torch.cuda.current_stream(ctx.device).wait_stream(side)
    err = float((a.float() - b.float()).abs().max()) if a.shape == b.shape else float("inf")
    labels = ya is None or torch.allclose(ya.float(), yb.float())
    if err <= TOL[dtype] * 10 and a.dtype == b.dtype and labels:
        return None
    return {
        "case": name,
        "dtype": str(dtype),
        "max_err": err,
        "dtype_out": str(b.dtype),
        "labels_equal": labels,
    }


def equivalence(ctx: Context) -> dict:
    """Every op and preset, three input dtypes; then the DALI options and the side stream."""
    from loffdata.augment.dali_backend import dali_available

    if not dali_available():
        return {"ok": False, "error": "DALI is not installed"}
    specs = {op: AugmentSpec.from_dict(d) for op, d in OPS.items()}
    specs |= {f"preset {p}": AugmentSpec.preset(p, rot90=0.5, channel_dropout=0.5) for p in PRESETS}
    failures, cases = [], 0
    for name, spec in specs.items():
        for dtype in DTYPES:
            cases += 1
            failures.append(_compare(ctx, name, spec, dtype))
    loffta = AugmentSpec.preset("loffta", rot90=0.5, jitter=0.5, brightness=0.3)
    for label, options in {
        "output=copy": {"output": "copy"},
        "layout=HWC": {"layout": "HWC"},
        "minibatch_size=256": {"minibatch_size": 256},
        "side stream": {"_side": True},
    }.items():
        cases += 1
        failures.append(_compare(ctx, f"loffta {label}", loffta, torch.float16, **options))
    failures = [f for f in failures if f]
    return {"ok": not failures, "cases": cases, "failures": failures}


# -- training, extraction, fine-tuning ---------------------------------------------------------


def training(ctx: Context) -> dict:
    """DeiT-S on LOFF-TA batches from LoffLoader: the share of step time spent waiting for data."""
    from loffdata.train.models import create_classifier

    s = ctx.sizes
    shape = s.loader_shapes[0]
    root = make_cache(ctx, "x".join(map(str, shape)), s.loader_n[0], shape)  # the throughput cache
    ld = LoffLoader(
        root,
        batch_size=s.batch,
        num_workers=s.workers,
        augment="loffta",
        device=ctx.device,
        dtype=torch.float16,
    )
    kind = "deit_s" if ctx.cuda else "linear"  # smoke: the loop, not the model
    model = create_classifier(kind, in_chans=shape[0], grid=shape[1:], num_classes=10, probe=False)
    model = model.to(ctx.device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    # the first epoch warms up (compilation, buffers)
    figures = [_train_epoch(ctx, ld, model, opt, epoch) for epoch in range(s.train_epochs + 1)]
    ld.close()
    later = figures[1:] or figures
    frac = statistics.mean(f["wait_fraction"] for f in later)
    ok = all(f["finite_loss"] for f in figures)
    return {"ok": ok, "model": kind, "data_wait_fraction": frac, "epochs": figures}


def _train_epoch(ctx: Context, ld: LoffLoader, model: Any, opt: Any, epoch: int) -> dict:
    """One epoch of training steps; its time and the loader's wait."""
    ld.set_epoch(epoch)
    t0 = time.perf_counter()
    for x, y in ld:
        with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=ctx.cuda):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    ctx.sync()
    seconds = time.perf_counter() - t0
    return {
        "epoch": epoch,
        "seconds": seconds,
        "wait_s": ld.stats.wait_s,
        "wait_fraction": ld.stats.wait_s / seconds,
        "batches": ld.stats.batches,
        "expected_batches": len(ld),
        "finite_loss": bool(torch.isfinite(loss)),
    }


def extraction(ctx: Context) -> dict:
    """images/s of ``loffdata.extract`` vs the same model's plain batched inference."""
    from loffdata.extract.pipeline import ExtractConfig, extract

    n = ctx.sizes.extract_images
    model = "vit_small_patch14_dinov2" if ctx.cuda else "test_vit"  # smoke: timm's tiny ViT
    cfg = ExtractConfig(
        out=str(ctx.root / "extract"),
        source="shapes",
        model=model,
        img_size=224 if ctx.cuda else 64,
        shapes_counts={"train": n},
        batch_size=64 if ctx.cuda else 4,
        device=str(ctx.device),
        progress=False,
        workers=ctx.sizes.workers,
    )
    t0 = time.perf_counter()
    extract(cfg)
    ctx.sync()
    pipeline = n / (time.perf_counter() - t0)
    plain = _plain_inference(ctx, cfg, n)
    return {
        "ok": True,
        "model": model,
        "extract_images_per_s": pipeline,
        "plain_images_per_s": plain,
        "ratio": pipeline / plain,
    }


def _plain_inference(ctx: Context, cfg: Any, n: int) -> float:
    """images/s of the extraction's model on random batches already on the device."""
    from loffdata.extract.pipeline import build_model, compute_features

    net = build_model(cfg).to(ctx.device).eval()
    x = torch.randn(cfg.batch_size, 3, cfg.img_size, cfg.img_size, device=ctx.device)
    steps = max(1, n // cfg.batch_size)
    with (
        torch.inference_mode(),
        torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=ctx.cuda),
    ):
        compute_features(net, x)
        ctx.sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            compute_features(net, x)
        ctx.sync()
    return steps * cfg.batch_size / (time.perf_counter() - t0)


def finetune(ctx: Context) -> dict:
    """``recipes/compare_finetune.py`` per foundation model: speed and memory ratios."""
    models = ctx.sizes.finetune_models or ("quick",)
    runs = {model: _finetune_run(ctx, model) for model in models}
    return {
        "ok": all("error" not in r for r in runs.values()),
        "runs": runs,
        "paper": {"speedup": 37, "memory": 26},
    }


def _finetune_run(ctx: Context, model: str) -> dict:
    """One ``compare_finetune.py`` run in a subprocess; its ratios, or the error."""
    import json

    out = ctx.root / f"finetune-{model}.json"
    if model == "quick":
        args = ["--quick", "--device", "cpu", "--steps", "1", "--warmup", "0"]
        if not ctx.cuda:  # the CPU smoke: the recipe's path on timm's tiny test ViT
            args += ["--model", "test_vit", "--img_size", "64", "--classifier", "linear"]
    else:
        args = ["--model", model, "--img_size", "224", "--device", str(ctx.device)]
        args += ["--batch_size", "32", "--steps", "6", "--warmup", "2"]
    script = str(REPO / "recipes" / "compare_finetune.py")
    try:
        proc = subprocess.run(
            [sys.executable, script, *args, "--out", str(out)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=240,
        )
    except subprocess.TimeoutExpired:
        return {"error": "timed out after 240 s"}
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    r = json.loads(out.read_text())
    keys = ("speedup", "speedup_best", "memory_ratio")
    return {k: r.get(k) for k in keys}


SECTIONS = {
    "equivalence": equivalence,
    "loader": loader,
    "h2d": h2d,
    "throughput": throughput,
    "resize": resize,
    "training": training,
    "extraction": extraction,
    "finetune": finetune,
}
ORDER = tuple(SECTIONS)  # what a plain run does; "standin" runs with --device standin
SECTIONS["standin"] = standin


def markdown_rows(report: dict) -> list[str]:
    """The table of ``docs/benchmarks-gpu.md`` for one report."""
    from gpu_report import rows

    return rows(report)
