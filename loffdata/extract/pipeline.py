"""Feature extraction: images -> frozen timm model -> spatial feature maps -> shards.

The data flow of one split::

    records --(DataLoader workers: decode + timm eval transform)--> image batches
      --(model.forward_intermediates, NCHW, optional avg-pool)--> feature batches
      --(bounded queue)--> writer thread: one tar shard + JSON sidecar per planned shard

Planning is a pure function of the input: shard ``j`` of a split holds images
``[j*S, (j+1)*S)`` of its ordered record list, and rank ``r`` of ``W`` extracts the shards
with ``j % W == r``. A shard is complete once its sidecar (``<prefix>-<j>.json``, written
after the tar commits) exists, so a re-run after a crash redoes only incomplete shards:
no duplicates, no gaps, any number of ranks. Rank 0 builds one manifest per split from all
sidecars at the end, merging the per-shard channel statistics.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import queue
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import fsspec
import numpy as np
import torch
import torch.nn.functional as F

from loffdata.errors import LoffError
from loffdata.extract.images import (
    BadImageError,
    ImageRecord,
    ImageSource,
    decode_image,
    iter_wds_images,
    load_image,
    open_source,
)
from loffdata.extract.teacher import build_teacher
from loffdata.format.manifest import Manifest, ShardInfo, TensorSpec
from loffdata.format.stats import ChannelStats
from loffdata.format.writer import ShardWriter, WriterConfig, shard_name
from loffdata.util import DistContext, init_distributed, write_json

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

CONFIG_NAME = "extract_config.json"
_FINGERPRINT_FIELDS = (
    "model", "pretrained", "checkpoint", "model_kwargs", "img_size", "crop_pct", "layer",
    "norm", "pooled", "pool", "dtype", "shard_size", "prefix",
    "teacher", "teacher_topk", "teacher_views",
)  # fmt: skip
_SECRET_WORDS = ("key", "secret", "token", "password", "credential")


class RandomWeightsWarning(UserWarning):
    """The model has random weights (neither ``pretrained`` nor ``checkpoint`` given)."""


@dataclass
class ExtractConfig:
    """Everything one extraction run needs; written to ``<out>/extract_config.json``.

    Attributes:
        out: output directory or fsspec URL; each split goes to ``<out>/<split>``.
        input: image folder, CSV file, WebDataset URL(s) (or ``{split: urls}``), or
            ``None`` for the embedded ``shapes`` dataset.
        source: input kind: ``auto``, ``folder``, ``csv``, ``wds`` or ``shapes``.
        model: any timm model name.
        pretrained: load the hub weights (needs a network or a warm cache).
        checkpoint: local weights file (a state dict), loaded through timm's pretrained
            path (``pretrained_cfg_overlay=dict(file=...)``), so ViT position embeddings
            are resampled to ``img_size`` as for hub weights.
        model_kwargs: extra ``timm.create_model`` keyword arguments.
        img_size: input resolution (square); ``None``: the model's own (112 for ``shapes``).
            ViTs are created at this size (position embeddings resampled).
        crop_pct: overrides the eval transform's centre-crop fraction (``1.0``: no crop).
        layer: block (ViT) or stage (CNN) whose output is stored; negative counts from the end.
        norm: apply the model's final norm to the stored map (``forward_intermediates(norm=)``).
        pooled: also store the pre-logits vector (``forward_head(pre_logits=True)``: CLS token
            or global pool after the final norm) as extra tensor ``pooled``.
        pool: average-pool the map by this integer factor before writing.
        dtype: storage dtype: ``float16``, ``bfloat16``, ``float32`` or ``int8``.
        shard_size: images per shard (the unit of resumption).
        prefix: shard file name prefix.
        batch_size: images per forward pass.
        workers: DataLoader worker processes for decoding and preprocessing; ``None``:
            half the CPU cores, 1 to 8 (the other half runs inference on CPU).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        amp: bf16 autocast (and channels_last) on CUDA.
        skip_bad: skip unreadable images and list them in the manifest instead of failing.
        overwrite: delete an existing output whose configuration differs, instead of failing.
        storage_options: fsspec options for the output (and folder/CSV inputs).
        endpoint_url: S3 endpoint shortcut (``client_kwargs.endpoint_url``).
        shapes_counts: images per split of the ``shapes`` dataset.
        seed: seed of the ``shapes`` dataset.
        progress: show a progress bar (rank 0).
        teacher: store a teacher's logits as the ``logits`` extra: a timm classifier name or
            ``self`` (the feature model's head); ``None``: none (:mod:`loffdata.extract.teacher`).
        teacher_topk: logits kept per target, top-k compressed (``None``: all).
        teacher_views: teacher targets per image: the image, then image-space augmentations.
    """

    out: str = "out/demo"
    input: Any = None
    source: str = "auto"
    model: str = "vit_tiny_patch16_224"
    pretrained: bool = False
    checkpoint: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    img_size: int | None = None
    crop_pct: float | None = None
    layer: int = -1
    norm: bool = False
    pooled: bool = False
    pool: int = 1
    dtype: str = "float16"
    shard_size: int = 256
    prefix: str = "shard"
    batch_size: int = 64
    workers: int | None = None
    device: str = "auto"
    amp: bool = True
    skip_bad: bool = False
    overwrite: bool = False
    storage_options: dict[str, Any] = field(default_factory=dict)
    endpoint_url: str | None = None
    shapes_counts: dict[str, int] = field(default_factory=lambda: {"train": 1000, "val": 200})
    seed: int = 0
    progress: bool = True
    teacher: str | None = None
    teacher_topk: int | None = 10
    teacher_views: int = 1

    def __post_init__(self) -> None:
        if self.dtype not in ("float16", "bfloat16", "float32", "int8"):
            raise ValueError(f"dtype must be float16, bfloat16, float32 or int8, got {self.dtype!r}")
        for name in ("pool", "shard_size", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if self.workers is None:
            self.workers = max(1, min(8, (os.cpu_count() or 2) // 2))
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")

    def fs_options(self) -> dict[str, Any]:
        """fsspec storage options with ``endpoint_url`` folded in."""
        opts = dict(self.storage_options)
        if self.endpoint_url:
            opts.setdefault("client_kwargs", {})["endpoint_url"] = self.endpoint_url
        return opts


# --- model, transform, features -------------------------------------------------------------


def build_model(config: ExtractConfig) -> torch.nn.Module:
    """Creates the timm model in eval mode; warns when its weights are random."""
    import timm

    if not config.pretrained and not config.checkpoint:
        warnings.warn(
            f"model {config.model!r} has RANDOM weights (no --pretrained, no --checkpoint): "
            "features are only useful for testing",
            RandomWeightsWarning,
            stacklevel=2,
        )
    kwargs = dict(config.model_kwargs)
    if config.img_size:
        kwargs["img_size"] = config.img_size
    create: dict[str, Any] = {"pretrained": config.pretrained}
    if config.checkpoint:  # timm's pretrained path: adapts position embeddings to img_size
        create = {"pretrained": True, "pretrained_cfg_overlay": {"file": str(config.checkpoint)}}
    try:
        model = timm.create_model(config.model, **create, **kwargs)
    except TypeError as err:  # CNNs take no img_size: they accept any input size
        if "img_size" not in kwargs or "img_size" not in str(err):
            raise
        kwargs.pop("img_size")
        model = timm.create_model(config.model, **create, **kwargs)
    if not hasattr(model, "forward_intermediates"):
        raise LoffError(f"timm model {config.model!r} has no forward_intermediates(); pick another model")
    return model.eval().requires_grad_(False)


def build_transform(model: torch.nn.Module, config: ExtractConfig) -> tuple[Callable, dict[str, Any]]:
    """The model's timm eval transform at ``config.img_size``; returns (transform, data config)."""
    import timm.data

    data_cfg = dict(timm.data.resolve_model_data_config(model))
    if config.img_size:
        data_cfg["input_size"] = (3, config.img_size, config.img_size)
    if config.crop_pct:
        data_cfg["crop_pct"] = config.crop_pct
    return timm.data.create_transform(**data_cfg, is_training=False), data_cfg


def compute_features(
    model: torch.nn.Module, x: torch.Tensor, *, layer: int = -1, norm: bool = False, pooled: bool = False, pool: int = 1
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Spatial feature map (N, C, H, W) of block/stage ``layer`` and optional pooled vector.

    ViTs drop prefix (CLS/register) tokens and reshape patch tokens to the grid; CNNs give
    the stage output. ``pool > 1`` average-pools the map (``F.avg_pool2d``, floor mode).
    """
    kw: dict[str, Any] = {"indices": [layer], "output_fmt": "NCHW"}
    if norm:
        kw["norm"] = True
    vec = None
    if pooled:
        final, inter = model.forward_intermediates(x, **kw)
        vec = model.forward_head(final, pre_logits=True)
    else:
        inter = model.forward_intermediates(x, intermediates_only=True, **kw)
    feat = inter[0]
    if pool > 1:
        feat = F.avg_pool2d(feat, pool)
    return feat, vec


# --- planning -------------------------------------------------------------------------------


def plan_shards(num_items: int, shard_size: int, *, rank: int = 0, world_size: int = 1) -> dict[int, range]:
    """Shard index -> image index range, for the shards owned by ``rank``.

    Shard ``j`` holds images ``[j*shard_size, (j+1)*shard_size)``; rank ``r`` owns ``j % world_size == r``.
    """
    num_shards = math.ceil(num_items / shard_size)
    return {
        j: range(j * shard_size, min(num_items, (j + 1) * shard_size))
        for j in range(rank, num_shards, world_size)
    }


# --- distributed ----------------------------------------------------------------------------


_Dist = DistContext


def _init_distributed() -> _Dist:
    # gloo: only barriers are needed, and they must work on CPU-only machines too
    return init_distributed("gloo", timeout=timedelta(hours=24))


def _device(config: ExtractConfig, ctx: _Dist) -> torch.device:
    if config.device != "auto":
        return torch.device(config.device)
    if torch.cuda.is_available():
        return torch.device("cuda", ctx.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


# --- data loading ---------------------------------------------------------------------------


class _MapImages(torch.utils.data.Dataset):
    """Decodes and transforms ``records[indices[k]]``; errors become values, not exceptions."""

    def __init__(self, records: list[ImageRecord], indices: list[int], transform: Callable, storage_options: dict):
        self.records, self.indices, self.transform, self.opts = records, indices, transform, storage_options

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> tuple[int, torch.Tensor | None, str]:
        i = self.indices[k]
        try:
            return i, self.transform(load_image(self.records[i].path, **self.opts)), ""
        except BadImageError as err:
            return i, None, err.reason


class _StreamImages(torch.utils.data.IterableDataset):
    """Streams a WebDataset; yields the wanted indices, split across workers by index."""

    def __init__(self, urls: list[str], indices: list[int], transform: Callable):
        self.urls, self.wanted, self.transform = urls, frozenset(indices), transform

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor | None, str]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        for i, path, data in iter_wds_images(self.urls):
            if i not in self.wanted or i % workers != worker:
                continue
            try:
                if data is None:
                    raise BadImageError(path, "sample has no jpg/jpeg/png/webp member")
                yield i, self.transform(decode_image(data, path)), ""
            except BadImageError as err:
                yield i, None, err.reason


def _collate(batch: list) -> tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]:
    good = [(i, x) for i, x, _ in batch if x is not None]
    bad = [(i, reason) for i, x, reason in batch if x is None]
    images = torch.stack([x for _, x in good]) if good else None
    return [i for i, _ in good], images, bad


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def _loader(dataset: torch.utils.data.Dataset, config: ExtractConfig, device: torch.device) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=config.batch_size,
        num_workers=config.workers,
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
        worker_init_fn=_worker_init if config.workers else None,
    )


# --- writing --------------------------------------------------------------------------------


@dataclass
class _SplitJob:
    """What the writer thread needs to know about one split."""

    split: str
    url: str
    records: list[ImageRecord]
    plan: dict[int, range]
    config: ExtractConfig
    on_shard: Callable[[str, int], None] | None = None


class _ShardSink:
    """Writer thread: gathers per-image results by shard and writes each shard when complete.

    Results may arrive in any order (several WebDataset workers); a shard is written once
    all of its images have arrived (features or a skip record), sorted by index.
    """

    def __init__(self, job: _SplitJob, fs: Any, root: str):
        self.job, self.fs, self.root = job, fs, root
        self.owner = {i: j for j, r in job.plan.items() for i in r}
        self.buffers: dict[int, dict[int, Any]] = {}
        self.queue: queue.Queue = queue.Queue(maxsize=4)
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"loffdata-writer-{job.split}", daemon=True)
        self.thread.start()

    def put(self, items: list[tuple[int, Any]]) -> None:
        """Queues ``(index, (features, pooled, teacher extras) | skip reason str)`` items; raises writer errors."""
        while True:
            self.check()
            try:
                self.queue.put(items, timeout=0.2)
                return
            except queue.Full:
                continue

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Waits for everything queued to be written; raises writer errors."""
        self.put([])
        self._stop.set()
        self.thread.join()
        self.check()
        if self.buffers:
            raise LoffError(f"split {self.job.split!r}: shards {sorted(self.buffers)} never received all their images")

    def abort(self) -> None:
        self._stop.set()
        self.thread.join(timeout=60)

    def _run(self) -> None:
        try:
            while True:
                try:
                    items = self.queue.get(timeout=0.2)
                except queue.Empty:
                    if self._stop.is_set():
                        return
                    continue
                self._add(items)
        except BaseException as err:  # surfaced in the main thread by check()
            self.error = err

    def _add(self, items: list[tuple[int, Any]]) -> None:
        for i, value in items:
            j = self.owner[i]
            buf = self.buffers.setdefault(j, {})
            buf[i] = value
            if len(buf) == len(self.job.plan[j]):
                self._write_shard(j, self.buffers.pop(j))
                if self.job.on_shard is not None:
                    self.job.on_shard(self.job.split, j)

    def _write_shard(self, j: int, results: dict[int, Any]) -> None:
        cfg = self.job.config
        wcfg = WriterConfig(prefix=cfg.prefix, max_samples=len(results) + 1, max_bytes=1 << 62, dtype=cfg.dtype, start_index=j)
        skipped = []
        with ShardWriter(self.job.url, wcfg, **cfg.fs_options()) as writer:
            for i in sorted(results):
                rec, value = self.job.records[i], results[i]
                if isinstance(value, str):
                    skipped.append({"path": rec.path, "reason": value})
                    continue
                feat, vec, more = value
                extras = {**({} if vec is None else {"pooled": vec}), **(more or {})}
                writer.write(rec.key, feat, label=rec.label, extras=extras or None)
        _write_json(self.fs, f"{self.root}/{_sidecar_name(cfg.prefix, j)}", _sidecar(j, writer, skipped))


def _sidecar_name(prefix: str, j: int) -> str:
    return shard_name(prefix, j)[: -len(".tar")] + ".json"


def _sidecar(j: int, writer: ShardWriter, skipped: list[dict[str, str]]) -> dict[str, Any]:
    spec = writer.feature_spec
    return {
        "index": j,
        "shard": dataclasses.asdict(writer.shards[0]) if writer.shards else None,
        "features": None if spec is None else {"shape": list(spec.shape), "dtype": spec.dtype},
        "extras": {k: {"shape": list(v.shape), "dtype": v.dtype} for k, v in writer.extra_specs.items()},
        "stats": {"count": writer.stats.count, "mean": writer.stats.mean.tolist(), "m2": writer.stats.m2.tolist()},
        "skipped": skipped,
    }


def _write_json(fs: Any, path: str, obj: Any) -> None:
    write_json(path, obj, fs=fs)


def _read_json(fs: Any, path: str) -> Any:
    with fs.open(path, "r") as f:
        return json.load(f)


# --- the extraction loop --------------------------------------------------------------------


@dataclass
class _Runtime:
    """Objects shared by all splits of one run."""

    config: ExtractConfig
    source: ImageSource
    model: torch.nn.Module
    transform: Callable
    device: torch.device
    ctx: _Dist
    fs: Any
    root: str
    data_cfg: dict[str, Any]
    teacher: Any = None  # loffdata.extract.teacher.Teacher


def _pending(rt: _Runtime, split: str, num_items: int) -> dict[int, range]:
    """This rank's planned shards of ``split`` that have no sidecar yet (stale temp files removed)."""
    plan = plan_shards(num_items, rt.config.shard_size, rank=rt.ctx.rank, world_size=rt.ctx.world_size)
    folder = f"{rt.root}/{split}"
    rt.fs.invalidate_cache()
    present = set(rt.fs.ls(folder, detail=False)) if rt.fs.isdir(folder) else set()
    names = {p.rstrip("/").rsplit("/", 1)[-1] for p in present}
    for name in names:
        if name.startswith(f".{rt.config.prefix}-") and ".tmp-" in name and _tmp_owner(name, rt.config.prefix) in plan:
            rt.fs.rm(f"{folder}/{name}")
    return {j: r for j, r in plan.items() if _sidecar_name(rt.config.prefix, j) not in names}


def _tmp_owner(name: str, prefix: str) -> int:
    digits = name[len(prefix) + 2 :].split(".", 1)[0]
    return int(digits) if digits.isdigit() else -1


def _dataset(rt: _Runtime, split: str, indices: list[int]) -> torch.utils.data.Dataset:
    if rt.source.wds_urls is not None:
        return _StreamImages(rt.source.wds_urls[split], indices, rt.transform)
    return _MapImages(rt.source.splits[split], indices, rt.transform, rt.source.storage_options)


def _forward(rt: _Runtime, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
    cfg, cuda = rt.config, rt.device.type == "cuda"
    x = images.to(rt.device, non_blocking=True)
    if cuda and cfg.amp:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast(rt.device.type, dtype=torch.bfloat16, enabled=cuda and cfg.amp):
        feat, vec = compute_features(rt.model, x, layer=cfg.layer, norm=cfg.norm, pooled=cfg.pooled, pool=cfg.pool)
    feat_np = feat.float().cpu().numpy()
    if vec is None:
        return feat_np, None
    vec_dtype = torch.float32 if cfg.dtype in ("float32", "int8") else getattr(torch, cfg.dtype)
    return feat_np, vec.to(vec_dtype).cpu()


def _extract_split(rt: _Runtime, split: str, on_shard: Callable[[str, int], None] | None) -> None:
    from tqdm.auto import tqdm

    records = rt.source.splits[split]
    pending = _pending(rt, split, len(records))
    indices = [i for r in pending.values() for i in r]
    if not indices:
        return
    job = _SplitJob(split, f"{rt.config.out.rstrip('/')}/{split}", records, pending, rt.config, on_shard)
    batches = iter(_loader(_dataset(rt, split, indices), rt.config, rt.device))  # fork workers before the thread
    sink = _ShardSink(job, rt.fs, f"{rt.root}/{split}")
    show = rt.config.progress and rt.ctx.rank == 0
    bar = tqdm(total=len(indices), unit="img", desc=f"extract {split}", disable=not show, dynamic_ncols=True)
    try:
        for good, images, bad in batches:
            sink.put(_bad_items(rt, records, bad))
            if images is not None:
                feats, vecs = _forward(rt, images)
                more = rt.teacher.extras(images.to(rt.device), good) if rt.teacher is not None else None
                sink.put([(i, (feats[k], None if vecs is None else vecs[k], more and more[k])) for k, i in enumerate(good)])
            bar.update(len(good) + len(bad))
        sink.close()
    except BaseException:
        sink.abort()
        raise
    finally:
        bar.close()


def _bad_items(rt: _Runtime, records: list[ImageRecord], bad: list[tuple[int, str]]) -> list[tuple[int, str]]:
    if bad and not rt.config.skip_bad:
        i, reason = bad[0]
        raise BadImageError(records[i].path, f"{reason} (use --skip_bad to skip unreadable images)")
    return bad


# --- the manifest ---------------------------------------------------------------------------


def _finalize_split(rt: _Runtime, split: str) -> Manifest:
    """Builds and saves ``<out>/<split>/manifest.json`` from all shard sidecars."""
    cfg, folder = rt.config, f"{rt.root}/{split}"
    num_shards = math.ceil(len(rt.source.splits[split]) / cfg.shard_size)
    rt.fs.invalidate_cache()
    missing = [j for j in range(num_shards) if not rt.fs.exists(f"{folder}/{_sidecar_name(cfg.prefix, j)}")]
    if missing:
        raise LoffError(f"split {split!r} at {cfg.out!r}: shards {missing[:10]} are incomplete; run again to resume")
    sidecars = [_read_json(rt.fs, f"{folder}/{_sidecar_name(cfg.prefix, j)}") for j in range(num_shards)]
    with_data = [s for s in sidecars if s["features"] is not None]
    if not with_data:
        raise LoffError(f"split {split!r}: no image could be read, nothing was written")
    manifest = Manifest(
        shards=[ShardInfo(**s["shard"]) for s in with_data],
        features=TensorSpec(tuple(with_data[0]["features"]["shape"]), with_data[0]["features"]["dtype"], "CHW"),
        classes=rt.source.classes,
        extras={k: TensorSpec(tuple(v["shape"]), v["dtype"]) for k, v in with_data[0]["extras"].items()},
        stats=_merge_stats(with_data),
        source=_source_info(rt, split),
        skipped=[item for s in sidecars for item in s["skipped"]],
    )
    _write_json(rt.fs, f"{folder}/manifest.json", manifest.to_dict())
    return manifest


def _merge_stats(sidecars: list[dict[str, Any]]) -> ChannelStats:
    stats = ChannelStats()
    for s in sidecars:
        d = s["stats"]
        stats.merge(ChannelStats(count=int(d["count"]), mean=np.asarray(d["mean"]), m2=np.asarray(d["m2"])))
    return stats


def _source_info(rt: _Runtime, split: str) -> dict[str, Any]:
    cfg = rt.config
    keys = ("model", "pretrained", "checkpoint", "img_size", "layer", "norm", "pool", "pooled")
    info = {**rt.source.info, "split": split, **{k: getattr(cfg, k) for k in keys}}
    return {**info, "img_size": int(rt.data_cfg["input_size"][-1]), "data_config": _jsonable(rt.data_cfg)}


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


# --- configuration record -------------------------------------------------------------------


def _fingerprint(cfg: ExtractConfig, source: ImageSource) -> dict[str, Any]:
    d = {k: getattr(cfg, k) for k in _FINGERPRINT_FIELDS}
    return _jsonable({**d, "source": source.info, "counts": {s: len(r) for s, r in source.splits.items()}})


def _redact(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: "***" if any(w in str(k).lower() for w in _SECRET_WORDS) else _redact(v) for k, v in obj.items()}
    return obj


def _check_previous(rt: _Runtime, fingerprint: dict[str, Any]) -> None:
    """Refuses to resume into an output written with a different configuration."""
    path = f"{rt.root}/{CONFIG_NAME}"
    if not rt.fs.exists(path):
        return
    previous = _read_json(rt.fs, path).get("fingerprint")
    if previous == fingerprint:
        return
    if not rt.config.overwrite:
        changed = sorted(k for k in fingerprint if (previous or {}).get(k) != fingerprint[k])
        raise LoffError(f"{rt.config.out!r} holds an extraction with a different configuration ({changed}); "
                        "use another --out or --overwrite")
    if rt.ctx.rank == 0:
        rt.fs.rm(rt.root, recursive=True)


def _write_config(rt: _Runtime, fingerprint: dict[str, Any]) -> None:
    import timm

    record = {
        "config": _redact(_jsonable(dataclasses.asdict(rt.config))),
        "fingerprint": fingerprint,
        "data_config": _jsonable(rt.data_cfg),
        "splits": {s: len(r) for s, r in rt.source.splits.items()},
        "classes": rt.source.classes,
        "world_size": rt.ctx.world_size,
        "device": str(rt.device),
        "versions": {"torch": torch.__version__, "timm": timm.__version__},
    }
    rt.fs.makedirs(rt.root, exist_ok=True)
    _write_json(rt.fs, f"{rt.root}/{CONFIG_NAME}", record)


# --- entry point ----------------------------------------------------------------------------


def _open_input(cfg: ExtractConfig) -> ImageSource:
    return open_source(cfg.input, kind=cfg.source, shapes_counts=cfg.shapes_counts, seed=cfg.seed, storage_options=cfg.fs_options())


def _setup(cfg: ExtractConfig, ctx: _Dist) -> _Runtime:
    source = _open_input(cfg)
    if cfg.img_size is None and source.kind == "shapes":
        cfg = dataclasses.replace(cfg, img_size=112)
    model = build_model(cfg)
    transform, data_cfg = build_transform(model, cfg)
    device = _device(cfg, ctx)
    model = model.to(device)
    if device.type == "cuda" and cfg.amp:
        model = model.to(memory_format=torch.channels_last)
    fs, root = fsspec.core.url_to_fs(cfg.out, **cfg.fs_options())
    teacher = build_teacher(cfg, model, device)
    return _Runtime(cfg, source, model, transform, device, ctx, fs, root.rstrip("/"), data_cfg, teacher)


def extract(config: ExtractConfig, *, on_shard: Callable[[str, int], None] | None = None) -> dict[str, Manifest]:
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
    ctx = _init_distributed()
    try:
        rt = _setup(config, ctx)
        fingerprint = _fingerprint(rt.config, rt.source)
        _check_previous(rt, fingerprint)
        ctx.barrier()
        if ctx.rank == 0:
            _write_config(rt, fingerprint)
        for split in rt.source.splits:
            _extract_split(rt, split, on_shard)
        ctx.barrier()
        manifests = {s: _finalize_split(rt, s) for s in rt.source.splits} if ctx.rank == 0 else {}
        ctx.barrier()
        return manifests or {s: Manifest.load(f"{rt.config.out.rstrip('/')}/{s}", **rt.config.fs_options()) for s in rt.source.splits}
    finally:
        if ctx.owns_group:
            torch.distributed.destroy_process_group()
