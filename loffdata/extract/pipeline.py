"""Feature extraction: images -> frozen timm model -> spatial feature maps -> shards.

The data flow of one split, one module per step::

    extractconfig.py  ExtractConfig (also the flags of tools/shard.py)
    images.py         records of a folder / CSV / WebDataset / the shapes set (shapes.py)
    model.py          timm model (seeded random weights or pretrained), eval transform, features
    plan.py           shard j holds images [j*S, (j+1)*S); rank r of W writes j % W == r
    batches.py        DataLoader workers: decode + eval transform -> image batches
    pipeline.py       model.forward_intermediates (NCHW, optional avg-pool) -> feature batches
    sink.py           writer thread: one tar shard + JSON sidecar per planned shard
    finalize.py       rank 0: one manifest per split from all sidecars, statistics merged
    record.py         <out>/extract_config.json and the resume check (weights fingerprint included)

A shard is complete once its sidecar exists, so a re-run after a crash redoes only
incomplete shards: no duplicates, no gaps, any number of ranks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import fsspec
import numpy as np
import torch

from loffdata.errors import LoffError, ManifestError
from loffdata.extract.batches import MapImages, StreamImages, image_loader
from loffdata.extract.extractconfig import (
    CONFIG_NAME,
    ExtractConfig,
    RandomWeightsWarning,
    check_paths,
)
from loffdata.extract.finalize import finalize_split
from loffdata.extract.images import BadImageError, ImageRecord, ImageSource, open_source
from loffdata.extract.model import build_model, build_transform, compute_features, weights_sha256
from loffdata.extract.plan import pending_shards, plan_shards
from loffdata.extract.record import (
    check_previous,
    check_same_weights,
    config_fingerprint,
    write_config,
)
from loffdata.extract.runtime import Dist, Runtime, init_distributed, select_device
from loffdata.extract.sink import ShardSink, SplitJob
from loffdata.extract.teacher import build_teacher
from loffdata.format.classes import class_names
from loffdata.format.manifest import Manifest
from loffdata.hints import check_device

__all__ = [
    "CONFIG_NAME",
    "ExtractConfig",
    "RandomWeightsWarning",
    "build_model",
    "build_transform",
    "compute_features",
    "plan_shards",
    "extract",
]


def _dataset(rt: Runtime, split: str, indices: list[int]) -> torch.utils.data.Dataset:
    if rt.source.wds_urls is not None:
        return StreamImages(rt.source.wds_urls[split], indices, rt.transform)
    return MapImages(rt.source.splits[split], indices, rt.transform, rt.source.storage_options)


class _Outputs:
    """A batch's features on their way to the host: on CUDA copied into pinned memory with
    ``non_blocking=True`` after an event, so the host reads them (:meth:`get`) one batch
    later, while the device already computes the next batch; on the CPU at once."""

    def __init__(self, feat: torch.Tensor, vec: torch.Tensor | None, vec_dtype: torch.dtype):
        self.done = None
        if feat.device.type == "cuda":
            self.feat = torch.empty(feat.shape, dtype=torch.float32, pin_memory=True)
            self.feat.copy_(feat, non_blocking=True)
            self.vec = (
                None if vec is None else torch.empty(vec.shape, dtype=vec_dtype, pin_memory=True)
            )
            if vec is not None:
                self.vec.copy_(vec, non_blocking=True)
            self.done = torch.cuda.Event()
            self.done.record()
        else:
            self.feat, self.vec = feat.float(), None if vec is None else vec.to(vec_dtype)

    def get(self) -> tuple[np.ndarray, torch.Tensor | None]:
        if self.done is not None:
            self.done.synchronize()  # the copy queued one batch ago: the device is not left idle
        return self.feat.numpy(), self.vec


def _forward(rt: Runtime, images: torch.Tensor) -> _Outputs:
    """Queues the model on a batch and the copy of its outputs to the host."""
    cfg, cuda = rt.config, rt.device.type == "cuda"
    x = images.to(rt.device, non_blocking=True)
    if cuda and cfg.amp:
        x = x.contiguous(memory_format=torch.channels_last)
    with (
        torch.inference_mode(),
        torch.autocast(rt.device.type, dtype=torch.bfloat16, enabled=cuda and cfg.amp),
    ):
        feat, vec = compute_features(
            rt.model, x, layer=cfg.layer, norm=cfg.norm, pooled=cfg.pooled, pool=cfg.pool
        )
    vec_dtype = torch.float32 if cfg.dtype in ("float32", "int8") else getattr(torch, cfg.dtype)
    return _Outputs(feat, vec, vec_dtype)


def _put_outputs(sink: ShardSink, pending: tuple | None) -> None:
    """Hands a batch's features (its copy to the host done by now) to the sink."""
    if pending is None:
        return
    good, outputs, more = pending
    feats, vecs = outputs.get()
    sink.put(
        [
            (i, (feats[k], None if vecs is None else vecs[k], more and more[k]))
            for k, i in enumerate(good)
        ]
    )


def _extract_split(rt: Runtime, split: str, on_shard: Callable[[str, int], None] | None) -> None:
    from tqdm.auto import tqdm

    records = rt.source.splits[split]
    pending = pending_shards(rt, split, len(records))
    indices = [i for r in pending.values() for i in r]
    if not indices:
        return
    job = SplitJob(
        split,
        f"{rt.config.out.rstrip('/')}/{split}",
        records,
        pending,
        rt.config,
        on_shard,
        rt.weights,
    )
    batches = iter(
        image_loader(_dataset(rt, split, indices), rt.config, rt.device)
    )  # fork workers before the thread
    sink = ShardSink(job, rt.fs, f"{rt.root}/{split}")
    show = rt.config.progress and rt.ctx.rank == 0
    bar = tqdm(
        total=len(indices),
        unit="img",
        desc=f"extract {split}",
        disable=not show,
        dynamic_ncols=True,
    )
    try:
        _run_batches(rt, records, batches, sink, bar)
        sink.close()
    except BaseException:
        sink.abort()
        raise
    finally:
        bar.close()


def _run_batches(
    rt: Runtime, records: list[ImageRecord], batches: Iterator, sink: ShardSink, bar: Any
) -> None:
    """Runs the model on each batch; a batch's outputs go to the sink while the device runs
    the next one."""
    pending = None  # the previous batch: its outputs are read while the device runs this one
    for good, images, bad in batches:
        current = None
        if images is not None:
            outputs = _forward(rt, images)
            more = rt.teacher.extras(images.to(rt.device), good) if rt.teacher is not None else None
            current = (good, outputs, more)
        _put_outputs(sink, pending)
        sink.put(_bad_items(rt, records, bad))
        pending = current
        bar.update(len(good) + len(bad))
    _put_outputs(sink, pending)


def _bad_items(
    rt: Runtime, records: list[ImageRecord], bad: list[tuple[int, str]]
) -> list[tuple[int, str]]:
    if bad and not rt.config.skip_bad:
        i, reason = bad[0]
        raise BadImageError(records[i].path, f"{reason} (use --skip_bad to skip unreadable images)")
    return bad


def _open_input(cfg: ExtractConfig) -> ImageSource:
    source = open_source(
        cfg.input,
        kind=cfg.source,
        shapes_counts=cfg.shapes_counts,
        seed=cfg.seed,
        storage_options=cfg.fs_options(),
    )
    return _with_class_names(cfg, source)


def _with_class_names(cfg: ExtractConfig, source: ImageSource) -> ImageSource:
    """Class names for integer labels: ``--classes``, else the label values (checked either way)."""
    if source.classes is not None:
        if cfg.classes is not None:
            raise LoffError(
                f"--classes: the {source.kind} input names its classes itself "
                f"({source.classes[:5]} ...)"
            )
        return source
    labels = [r.label for records in source.splits.values() for r in records if r.label is not None]
    try:
        source.classes = class_names(cfg.classes, labels)
    except ManifestError as err:
        raise LoffError(f"--classes: {err}") from None
    return source


def _setup(cfg: ExtractConfig, ctx: Dist) -> Runtime:
    check_paths(cfg)
    device = select_device(cfg, ctx)
    check_device(device)
    source = _open_input(cfg)
    if cfg.img_size is None and source.kind == "shapes":
        cfg = dataclasses.replace(cfg, img_size=112)
    model = build_model(cfg)
    transform, data_cfg = build_transform(model, cfg)
    weights = weights_sha256(model)
    model = model.to(device)
    if device.type == "cuda" and cfg.amp:
        model = model.to(memory_format=torch.channels_last)
    fs, root = fsspec.core.url_to_fs(cfg.out, **cfg.fs_options())
    teacher = build_teacher(cfg, model, device)
    return Runtime(
        cfg, source, model, transform, device, ctx, fs, root.rstrip("/"), data_cfg, weights, teacher
    )


def extract(
    config: ExtractConfig, *, on_shard: Callable[[str, int], None] | None = None
) -> dict[str, Manifest]:
    """Extracts features of every split of the input and writes ``<out>/<split>`` datasets.

    Resumes where a previous run stopped. Under ``torchrun`` (``WORLD_SIZE > 1``) every rank
    extracts its shards and rank 0 writes the manifests after a barrier.

    Args:
        config: the run's configuration.
        on_shard: called as ``on_shard(split, shard_index)`` in the writer thread after each
            shard and its sidecar are committed (progress reporting, tests).

    Returns:
        split name -> manifest (on every rank).
    """
    ctx = init_distributed()
    try:
        rt = _setup(config, ctx)
        fingerprint = config_fingerprint(rt.config, rt.source, rt.weights)
        check_previous(rt, fingerprint)
        ctx.barrier()
        if ctx.rank == 0:
            write_config(rt, fingerprint)
        ctx.barrier()
        check_same_weights(rt, fingerprint)
        for split in rt.source.splits:
            _extract_split(rt, split, on_shard)
        ctx.barrier()
        manifests = {s: finalize_split(rt, s) for s in rt.source.splits} if ctx.rank == 0 else {}
        ctx.barrier()
        return manifests or {
            s: Manifest.load(f"{rt.config.out.rstrip('/')}/{s}", **rt.config.fs_options())
            for s in rt.source.splits
        }
    finally:
        if ctx.owns_group:
            torch.distributed.destroy_process_group()
