"""The sections of ``benchmarks/gpu_check.py``: each takes a :class:`Context`, returns a dict.

A section returns ``{"ok": bool, ...figures...}``; ``failures`` lists what did not match.
Every section also runs on the CPU at smoke sizes (``--smoke --device cpu``), so that the
script is exercised by the test suite; device-only measurements are then ``None``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from loffdata.augment import Augmenter, AugmentSpec
from loffdata.augment.registry import EXAMPLES
from loffdata.augment.spec import PRESETS
from loffdata.format.writer import WriterConfig, write_dataset
from loffdata.loader import LoffLoader
from loffdata.loader.config import LoaderConfig

REPO = Path(__file__).resolve().parents[1]

OPS = EXAMPLES  # every op's examples, from the augmentation registry
DTYPES = (torch.float16, torch.float32, torch.bfloat16)
TOL = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}


@dataclass(frozen=True)
class Sizes:
    """How big each section's work is."""

    eq_shape: tuple[int, int, int]
    loader_shapes: tuple[tuple[int, int, int], ...]
    loader_n: tuple[int, ...]
    batch: int
    workers: int
    transfer_batches: int
    train_epochs: int
    extract_images: int
    finetune_models: tuple[str, ...]
    h2d_bytes: int


FULL = Sizes(
    eq_shape=(64, 16, 16),
    loader_shapes=((768, 16, 16), (1024, 32, 32)),
    loader_n=(4096, 1536),
    batch=256,
    workers=min(8, os.cpu_count() or 1),
    transfer_batches=200,
    train_epochs=2,
    extract_images=1024,
    finetune_models=("vit_base_patch14_dinov2", "vit_giant_patch14_dinov2"),
    h2d_bytes=512 << 20,
)
SMOKE = Sizes(
    eq_shape=(6, 8, 8),
    loader_shapes=((8, 4, 4),),
    loader_n=(64,),
    batch=8,
    workers=1,
    transfer_batches=12,
    train_epochs=1,
    extract_images=8,
    finetune_models=(),
    h2d_bytes=1 << 20,
)


@dataclass
class Context:
    """What every section gets: the device, the sizes and a scratch directory."""

    device: torch.device
    sizes: Sizes
    root: Path

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)


def make_cache(
    ctx: Context,
    name: str,
    n: int,
    shape: tuple[int, ...],
    dtype: str = "float16",
    classes: int = 10,
) -> str:
    """A random feature cache of ``n`` samples under the scratch directory (written once)."""
    root = ctx.root / name
    if not (root / "manifest.json").exists():
        rng = np.random.default_rng(0)
        base = rng.standard_normal((16, *shape)).astype(np.float32)
        items = ((f"k{i:07d}", base[i % 16] + np.float32(i % 7), i % classes) for i in range(n))
        write_dataset(
            str(root),
            items,
            config=WriterConfig(max_samples=256, dtype=dtype),
            classes=[f"c{i}" for i in range(classes)],
        )
    return str(root)


def _digest(x: torch.Tensor, y: torch.Tensor) -> str:
    h = hashlib.sha1(x.detach().float().cpu().numpy().tobytes())
    h.update(y.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


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


# -- loader checks on the device ----------------------------------------------------------------


def _batches(loader: LoffLoader, limit: int | None = None) -> list[str]:
    out = []
    for i, (x, y) in enumerate(loader):
        if limit is not None and i >= limit:
            break
        out.append(_digest(x, y))
    return out


def _int8(ctx: Context) -> dict | None:
    q = make_cache(ctx, "int8", 48, (8, 4, 4), dtype="int8")
    on_dev = next(
        iter(
            LoffLoader(
                q, batch_size=48, num_workers=0, augment=None, shuffle=False, device=ctx.device
            )
        )
    )
    on_cpu = next(iter(LoffLoader(q, batch_size=48, num_workers=0, augment=None, shuffle=False)))
    err = float((on_dev.features.cpu() - on_cpu.features).abs().max())
    return None if err <= 1e-6 else {"case": "int8 dequantised on the device", "max_err": err}


def _views_and_mixing(ctx: Context) -> list[dict]:
    data = make_cache(ctx, "small", 96, (8, 4, 4), classes=4)
    spec = {"preset": "loffta", "noise": 0.0, "mixup": 0.4, "cutmix": 0.4, "num_classes": 4}
    failures = []
    for backend in ("torch", "dali"):
        kw = dict(batch_size=16, num_workers=0, augment=spec, views=2, seed=3)
        dev = next(iter(LoffLoader(data, LoaderConfig(backend=backend), device=ctx.device, **kw)))
        cpu = next(iter(LoffLoader(data, LoaderConfig(backend="torch"), **kw)))
        err = float((dev.features.cpu() - cpu.features).abs().max())
        soft = torch.allclose(dev.labels.sum(1).cpu(), torch.ones(len(dev.labels)))
        if err > 1e-4 or not soft or dev.features.shape[0] != 32:
            failures.append(
                {"case": f"views + mixup/cutmix ({backend})", "max_err": err, "soft_sum_1": soft}
            )
    return failures


def _resume(ctx: Context) -> dict | None:
    data = make_cache(ctx, "small", 96, (8, 4, 4), classes=4)

    def make() -> LoffLoader:
        loader = LoffLoader(
            data, batch_size=8, num_workers=2, augment="loffta", seed=5, device=ctx.device
        )
        loader.set_epoch(1)
        return loader

    full = _batches(make())
    first = make()
    it = iter(first)
    head = [_digest(*next(it)) for _ in range(3)]
    state = first.state_dict()
    del it
    first.close()
    rest = make()
    rest.load_state_dict(state)
    got = head + _batches(rest)
    return (
        None if got == full else {"case": "exact resume", "batches": len(full), "resumed": len(got)}
    )


def _host_memory() -> int:
    if not torch.cuda.is_available():
        return 0
    stats = torch.cuda.host_memory_stats()
    return int(stats.get("allocated_bytes.all.current", stats.get("allocated_bytes.current", 0)))


def _transfer_modes(ctx: Context) -> tuple[dict, list[dict]]:
    """Both host-to-device paths: same batches, samples/s, pinned-memory growth."""
    s = ctx.sizes
    data = make_cache(ctx, "transfer", s.batch * 8, s.loader_shapes[0])
    figures, digests = {}, {}
    modes = ("register", "pin-thread") if ctx.cuda else ("auto",)
    for mode in modes:
        loader = LoffLoader(
            data,
            batch_size=s.batch,
            num_workers=s.workers,
            augment=None,
            seed=1,
            device=ctx.device,
            dtype=torch.float16,
        )
        loader.transfer = mode
        got, mem, t0, done = [], [], time.perf_counter(), 0
        epoch = 0
        while done < s.transfer_batches:
            loader.set_epoch(epoch)
            for x, y in loader:
                if epoch == 0:
                    got.append(_digest(x, y))
                done += 1
                if done in (10, s.transfer_batches):
                    mem.append(_host_memory())
                if done >= s.transfer_batches:
                    break
            epoch += 1
        ctx.sync()
        secs = time.perf_counter() - t0
        registered = len(getattr(loader, "_registry", []) or [])
        loader.close()
        digests[mode] = got
        figures[mode] = {
            "samples_per_s": done * s.batch / secs,
            "pinned_growth_bytes": mem[-1] - mem[0] if mem else 0,
            "registered_buffers": registered,
        }
    failures = []
    if len(set(map(tuple, digests.values()))) > 1:
        failures.append({"case": "register and pin-thread give the same batches"})
    for mode, f in figures.items():
        if f["pinned_growth_bytes"] > 64 << 20:
            failures.append(
                {"case": f"pinned memory bounded ({mode})", "growth": f["pinned_growth_bytes"]}
            )
    return figures, failures


def _syncs(ctx: Context) -> dict:
    """Host syncs torch reports per batch (``set_sync_debug_mode("warn")``), per backend."""
    if not ctx.cuda:
        return {}
    data = make_cache(ctx, "small", 96, (8, 4, 4), classes=4)
    out = {}
    for backend in ("torch", "dali"):
        loader = LoffLoader(
            data,
            LoaderConfig(backend=backend),
            batch_size=16,
            num_workers=1,
            augment="loffta",
            device=ctx.device,
        )
        next(iter(loader))  # warm-up pass outside the count (pipelines built, buffers registered)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                n = sum(1 for _ in loader)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        out[backend] = {
            "batches": n,
            "syncs": len(caught),
            "where": sorted({str(w.message)[:120] for w in caught})[:5],
        }
        loader.close()
    return out


def loader(ctx: Context) -> dict:
    failures = [_int8(ctx), *_views_and_mixing(ctx), _resume(ctx)]
    transfer, more = _transfer_modes(ctx)
    syncs = _syncs(ctx)
    failures = [f for f in failures + more if f]
    failures += [
        {"case": f"no host sync per batch ({k})", **v} for k, v in syncs.items() if v["syncs"]
    ]
    return {"ok": not failures, "transfer": transfer, "syncs": syncs, "failures": failures}


# -- bandwidth and throughput ------------------------------------------------------------------


def h2d(ctx: Context) -> dict:
    """Pinned and pageable host-to-device GB/s (medians of 5 copies)."""
    if not ctx.cuda:
        return {"pinned_gb_s": None, "pageable_gb_s": None}
    n = ctx.sizes.h2d_bytes
    dev = torch.empty(n, dtype=torch.uint8, device=ctx.device)
    out = {}
    for name, host in (
        ("pinned", torch.empty(n, dtype=torch.uint8, pin_memory=True)),
        ("pageable", torch.empty(n, dtype=torch.uint8)),
    ):
        host.fill_(1)
        rates = []
        for _ in range(6):
            ctx.sync()
            t0 = time.perf_counter()
            dev.copy_(host, non_blocking=True)
            ctx.sync()
            rates.append(n / (time.perf_counter() - t0) / 1e9)
        out[f"{name}_gb_s"] = statistics.median(rates[1:])
    return out


def _raw_read(root: str) -> tuple[float, int]:
    """Seconds and bytes of a sequential read of every shard (page cache warm)."""
    paths = sorted(Path(root).glob("*.tar"))
    for p in paths:
        p.read_bytes()
    t0, total = time.perf_counter(), 0
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while chunk := f.read(1 << 20):
                total += len(chunk)
    return time.perf_counter() - t0, total


def _epoch(loader: LoffLoader, ctx: Context, epoch: int) -> tuple[int, float]:
    loader.set_epoch(epoch)
    t0, n = time.perf_counter(), 0
    for x, _ in loader:
        n += len(x)
    ctx.sync()
    return n, time.perf_counter() - t0


def throughput(ctx: Context) -> dict:
    """Samples/s of LoffLoader to augmented device batches, first and later epoch."""
    s, rows = ctx.sizes, []
    ceiling = h2d(ctx).get("pinned_gb_s")
    for shape, n in zip(s.loader_shapes, s.loader_n):
        root = make_cache(ctx, "x".join(map(str, shape)), n, shape)
        secs, nbytes = _raw_read(root)
        raw = n / secs
        sample_bytes = int(np.prod(shape)) * 2
        for backend, augment in (("torch", None), ("torch", "loffta"), ("dali", "loffta")):
            if backend == "dali" and not ctx.cuda:
                continue
            ld = LoffLoader(
                root,
                LoaderConfig(backend=backend),
                batch_size=s.batch,
                num_workers=s.workers,
                augment=augment,
                device=ctx.device,
                dtype=torch.float16,
            )
            first = _epoch(ld, ctx, 0)
            later = _epoch(ld, ctx, 1)
            ld.close()
            rate = later[0] / later[1]
            gbs = rate * sample_bytes / 1e9
            rows.append(
                {
                    "shape": shape,
                    "backend": backend,
                    "augment": augment or "None",
                    "samples_per_s": rate,
                    "gb_s": gbs,
                    "first_epoch_samples_per_s": first[0] / first[1],
                    "raw_read_samples_per_s": raw,
                    "ratio_raw": rate / raw,
                    "ratio_h2d": gbs / ceiling if ceiling else None,
                    "wait_fraction": ld.stats.wait_fraction,
                }
            )
    return {"ok": True, "h2d_pinned_gb_s": ceiling, "rows": rows}


def resize(ctx: Context) -> dict:
    """ms per augmented batch: torch backend vs DALI at several minibatch sizes and HWC."""
    from loffdata.augment.dali_backend import DaliBackend, dali_available

    shape = ctx.sizes.loader_shapes[-1]
    spec = AugmentSpec.preset("loffta")
    x = torch.randn(ctx.sizes.batch, *shape, device=ctx.device).half()
    variants: dict[str, Any] = {"torch": None}
    if dali_available():
        variants |= {f"dali minibatch {m}": {"minibatch_size": m} for m in (None, 256, 4096)}
        variants["dali HWC"] = {"layout": "HWC"}
    out = {}
    for name, options in variants.items():
        aug = Augmenter(spec, backend="torch" if options is None else "dali", device=ctx.device)
        if options is not None:
            aug.backend = DaliBackend(spec, **options)
        times = []
        for i in range(6):
            ctx.sync()
            t0 = time.perf_counter()
            aug(x, indices=np.arange(i * len(x), (i + 1) * len(x)), epoch=0)
            ctx.sync()
            times.append(time.perf_counter() - t0)
        out[name] = 1e3 * statistics.median(times[1:])
    return {"ok": True, "shape": shape, "ms_per_batch": out}


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
    model = create_classifier(kind, in_chans=shape[0], grid=shape[1:], num_classes=10).to(
        ctx.device
    )
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    figures = []
    for epoch in range(s.train_epochs + 1):  # the first epoch warms up (compilation, buffers)
        ld.set_epoch(epoch)
        t0 = time.perf_counter()
        for x, y in ld:
            with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=ctx.cuda):
                loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        ctx.sync()
        figures.append(
            {
                "epoch": epoch,
                "seconds": time.perf_counter() - t0,
                "wait_s": ld.stats.wait_s,
                "wait_fraction": ld.stats.wait_s / (time.perf_counter() - t0),
            }
        )
    ld.close()
    later = figures[1:] or figures
    frac = statistics.mean(f["wait_fraction"] for f in later)
    return {
        "ok": bool(torch.isfinite(loss)),
        "model": kind,
        "data_wait_fraction": frac,
        "epochs": figures,
    }


def extraction(ctx: Context) -> dict:
    """images/s of ``loffdata.extract`` vs the same model's plain batched inference."""
    from loffdata.extract.pipeline import ExtractConfig, build_model, compute_features, extract

    n, model = (
        ctx.sizes.extract_images,
        ("vit_small_patch14_dinov2" if ctx.cuda else "vit_tiny_patch16_224"),
    )
    size = 224 if ctx.cuda else 64
    cfg = ExtractConfig(
        out=str(ctx.root / "extract"),
        source="shapes",
        model=model,
        img_size=size,
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
    net = build_model(cfg).to(ctx.device).eval()
    x = torch.randn(cfg.batch_size, 3, size, size, device=ctx.device)
    with (
        torch.inference_mode(),
        torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=ctx.cuda),
    ):
        compute_features(net, x)
        ctx.sync()
        t0 = time.perf_counter()
        for _ in range(max(1, n // cfg.batch_size)):
            compute_features(net, x)
        ctx.sync()
    plain = max(1, n // cfg.batch_size) * cfg.batch_size / (time.perf_counter() - t0)
    return {
        "ok": True,
        "model": model,
        "extract_images_per_s": pipeline,
        "plain_images_per_s": plain,
        "ratio": pipeline / plain,
    }


def finetune(ctx: Context) -> dict:
    """``recipes/compare_finetune.py`` per foundation model: speed and memory ratios."""
    runs = {}
    models = ctx.sizes.finetune_models or ("quick",)
    for model in models:
        out = ctx.root / f"finetune-{model}.json"
        args = (
            ["--quick", "--device", "cpu", "--steps", "1", "--warmup", "0"]
            if model == "quick"
            else [
                "--model",
                model,
                "--img_size",
                "224",
                "--device",
                str(ctx.device),
                "--batch_size",
                "32",
                "--steps",
                "6",
                "--warmup",
                "2",
            ]
        )
        try:
            proc = subprocess.run(
                [
                    sys.executable,
                    str(REPO / "recipes" / "compare_finetune.py"),
                    *args,
                    "--out",
                    str(out),
                ],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=240,
            )
        except subprocess.TimeoutExpired:
            runs[model] = {"error": "timed out after 240 s"}
            continue
        if proc.returncode != 0:
            runs[model] = {"error": proc.stderr[-2000:]}
            continue
        import json

        r = json.loads(out.read_text())
        runs[model] = {
            "speedup": r.get("speedup"),
            "speedup_best": r.get("speedup_best"),
            "memory_ratio": r.get("memory_ratio"),
        }
    return {
        "ok": all("error" not in r for r in runs.values()),
        "runs": runs,
        "paper": {"speedup": 37, "memory": 26},
    }


# -- the CUDA stand-in (the dry run of the device runbook; no GPU needed) ---------------------


def standin(ctx: Context) -> dict:
    """LoffLoader on the strict CUDA stand-in (:mod:`loffdata.loader.device`), both transfer
    modes: the batches equal the CPU loader's, a steady pass with views and mixing makes no
    host sync, and every registration is undone by ``close()``."""
    from loffdata.loader.device import StandInCuda

    data = make_cache(ctx, "standin", 96, (8, 4, 4), classes=4)
    kw = dict(
        batch_size=16,
        num_workers=2,
        views=2,
        seed=1,
        augment={"preset": "loffta", "mixup": 0.5, "cutmix": 0.5, "num_classes": 4},
    )
    want = [
        _digest(x, y) for x, y in LoffLoader(data, LoaderConfig(persistent_workers=False), **kw)
    ]
    failures, out = [], {}
    for mode in ("pin-thread", "register"):
        gpu = StandInCuda()
        loader = LoffLoader(data, LoaderConfig(persistent_workers=True), device=gpu, **kw)
        loader.transfer = mode
        first = list(loader)
        before = gpu.syncs
        held = list(loader)  # the steady pass: workers, buffers and registrations warm
        syncs = gpu.syncs - before
        same = [_digest(x, y) for x, y in first] == want
        loader.close()
        out[mode] = {
            "batches": len(held),
            "syncs": syncs,
            "same_as_cpu": same,
            "left_registered": len(gpu.registered),
        }
        if not same or syncs or gpu.registered:
            failures.append({"case": f"stand-in {mode}", **out[mode]})
    return {"ok": not failures, "transfer": out, "failures": failures}


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
