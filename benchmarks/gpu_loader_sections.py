"""The loader sections of ``benchmarks/gpu_check.py``: the loader on the device (int8, views,
mixing, resume, transfer modes, host syncs), host-to-device bandwidth, throughput, resize,
and the CUDA stand-in. Each takes a :class:`~gpu_common.Context` and returns a dict.
"""

from __future__ import annotations

import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gpu_common import Context, digest, make_cache

from loffdata.augment import Augmenter, AugmentSpec
from loffdata.loader import LoffLoader
from loffdata.loader.loaderconfig import LoaderConfig

# -- loader checks on the device ----------------------------------------------------------------


def _batches(loader: LoffLoader, limit: int | None = None) -> list[str]:
    out = []
    for i, (x, y) in enumerate(loader):
        if limit is not None and i >= limit:
            break
        out.append(digest(x, y))
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
    head = [digest(*next(it)) for _ in range(3)]
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
        digests[mode], figures[mode] = _transfer_mode(ctx, data, mode)
    failures = []
    if len(set(map(tuple, digests.values()))) > 1:
        failures.append({"case": "register and pin-thread give the same batches"})
    for mode, f in figures.items():
        if f["pinned_growth_bytes"] > 64 << 20:
            failures.append(
                {"case": f"pinned memory bounded ({mode})", "growth": f["pinned_growth_bytes"]}
            )
    return figures, failures


def _transfer_mode(ctx: Context, data: str, mode: str) -> tuple[list[str], dict]:
    """The first epoch's batch digests and the figures of one host-to-device path."""
    s = ctx.sizes
    loader = LoffLoader(
        data,
        LoaderConfig(transfer=mode),
        batch_size=s.batch,
        num_workers=s.workers,
        augment=None,
        seed=1,
        device=ctx.device,
        dtype=torch.float16,
    )
    got, mem, t0, done = [], [], time.perf_counter(), 0
    epoch = 0
    while done < s.transfer_batches:
        loader.set_epoch(epoch)
        for x, y in loader:
            if epoch == 0:
                got.append(digest(x, y))
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
    return got, {
        "samples_per_s": done * s.batch / secs,
        "pinned_growth_bytes": mem[-1] - mem[0] if mem else 0,
        "registered_buffers": registered,
    }


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
        for backend, augment in (("torch", None), ("torch", "loffta"), ("dali", "loffta")):
            if backend == "dali" and not ctx.cuda:
                continue
            row = _throughput_row(ctx, root, shape, backend, augment, raw=n / secs)
            rows.append({**row, "ratio_h2d": row["gb_s"] / ceiling if ceiling else None})
    return {"ok": True, "h2d_pinned_gb_s": ceiling, "rows": rows}


def _throughput_row(
    ctx: Context, root: str, shape: tuple, backend: str, augment: str | None, *, raw: float
) -> dict:
    """One backend's rates over the float16 cache at ``root`` (``raw``: samples/s of a plain
    read of it)."""
    ld = LoffLoader(
        root,
        LoaderConfig(backend=backend),
        batch_size=ctx.sizes.batch,
        num_workers=ctx.sizes.workers,
        augment=augment,
        device=ctx.device,
        dtype=torch.float16,
    )
    first = _epoch(ld, ctx, 0)
    later = _epoch(ld, ctx, 1)
    ld.close()
    rate = later[0] / later[1]
    gbs = rate * int(np.prod(shape)) * 2 / 1e9
    return {
        "shape": shape,
        "backend": backend,
        "augment": augment or "None",
        "samples_per_s": rate,
        "gb_s": gbs,
        "first_epoch_samples_per_s": first[0] / first[1],
        "raw_read_samples_per_s": raw,
        "ratio_raw": rate / raw,
        "wait_fraction": ld.stats.wait_fraction,
    }


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
    want = [digest(x, y) for x, y in LoffLoader(data, LoaderConfig(persistent_workers=False), **kw)]
    failures, out = [], {}
    for mode in ("pin-thread", "register"):
        gpu = StandInCuda()
        config = LoaderConfig(persistent_workers=True, transfer=mode)
        loader = LoffLoader(data, config, device=gpu, **kw)
        first = list(loader)
        before = gpu.syncs
        held = list(loader)  # the steady pass: workers, buffers and registrations warm
        syncs = gpu.syncs - before
        same = [digest(x, y) for x, y in first] == want
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
