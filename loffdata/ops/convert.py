"""Deriving a cache from a cache: pool, crop, change dtype, select extras, re-shard.

A pooled or int8 variant of a feature cache needs no foundation model (``loffdata convert
SRC DST --pool 2 --dtype int8``, :mod:`loffdata.cli.convert`). The source is read shard by
shard (any fsspec URL), each sample transformed in float32 (crop, then integer-factor
average pooling, as ``avg_pool2d`` in floor mode) and written by
:class:`~loffdata.format.writer.ShardWriter` (int8: the codec's per-channel quantisation).
Channel statistics are recomputed from the converted features; the manifest comes last.

Output shard ``j`` holds source samples ``[starts[j], starts[j + 1])`` of a plan fixed up
front (:func:`plan_output`), so a re-run resumes: shards whose record
(``DST/.convert/<prefix>-<j>.json``, written after the shard) exists are skipped.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from loffdata.errors import LoffError
from loffdata.format import codec
from loffdata.format.manifest import Manifest
from loffdata.format.names import check_destination, check_prefix
from loffdata.format.sample import Sample, decode_sample, encode_sample
from loffdata.format.tar import iter_sample_members
from loffdata.format.writer import NONFINITE_RULES, ShardWriter, WriterConfig, shard_name
from loffdata.redact import redact_json_text, redact_text
from loffdata.storage.retry import RetryConfig
from loffdata.storage.shardfile import filesystem, open_shard
from loffdata.stream.checks import SampleRules, check_sample
from loffdata.stream.sources import ShardSet, load_manifest, resolve_source
from loffdata.util import write_json

__all__ = [
    "ConfigMismatch",
    "ConvertConfig",
    "convert",
    "convert_features",
    "plan_output",
    "RECORD_DIR",
]

RECORD_DIR = ".convert"
_DTYPES = ("float32", "float16", "bfloat16", "int8")


class ConfigMismatch(LoffError, ValueError):
    """A :class:`ConvertConfig` does not fit the source (a crop or pool larger than its grid,
    an extra it lacks); raised before anything is written. The message starts with the field."""


@dataclass(frozen=True)
class ConvertConfig:
    """What a conversion does.

    Attributes:
        pool: average-pool the feature map by this integer factor (floor mode: a remainder
            row or column is dropped, as ``avg_pool2d``).
        crop: ``(top, left, height, width)`` in the source grid, applied before pooling;
            ``None`` keeps the whole map.
        dtype: storage dtype of the output features (``float32``, ``float16``,
            ``bfloat16``, ``int8`` with a per-channel scale); ``None`` keeps the source's.
        extras: names of the extra tensors to keep; ``None`` keeps all, ``()`` drops all.
        max_samples: most samples per output shard; ``None`` keeps the source's shards
            (unless ``max_bytes`` asks for fewer).
        max_bytes: most bytes per output shard, turned into a sample count from the size of
            the first converted sample (samples of a dataset have nearly equal sizes).
        prefix: output shard name prefix.
        nonfinite: NaN or infinite features (also after conversion to ``dtype``):
            ``"refuse"`` (an error naming the sample) or ``"zero"`` (stored as 0); see
            :class:`~loffdata.format.writer.WriterConfig`.
    """

    pool: int = 1
    crop: tuple[int, int, int, int] | None = None
    dtype: str | None = None
    extras: tuple[str, ...] | None = None
    max_samples: int | None = None
    max_bytes: int | None = None
    prefix: str = "shard"
    nonfinite: str = "refuse"

    def __post_init__(self) -> None:
        if self.nonfinite not in NONFINITE_RULES:
            raise ValueError(f"nonfinite must be one of {NONFINITE_RULES}, got {self.nonfinite!r}")
        check_prefix(self.prefix)
        if int(self.pool) < 1:
            raise ValueError(f"pool must be >= 1, got {self.pool}")
        if self.dtype not in (None, *_DTYPES):
            raise ValueError(f"dtype must be None or one of {_DTYPES}, got {self.dtype!r}")
        if self.crop is not None and (
            len(self.crop) != 4 or min(self.crop[2:]) < 1 or min(self.crop[:2]) < 0
        ):
            raise ValueError(
                "crop must be (top, left, height, width) with height, width >= 1, "
                f"got {self.crop!r}"
            )
        for name in ("max_samples", "max_bytes"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def convert_features(x: Any, *, pool: int = 1, crop: Sequence[int] | None = None) -> np.ndarray:
    """One (C, H, W) map, cropped then average-pooled, as float32 (int8 is dequantised)."""
    x = x.dequantize() if isinstance(x, codec.Quantized) else np.asarray(x)
    x = x.astype(np.float32)
    if crop is not None:
        top, left, h, w = (int(v) for v in crop)
        if top + h > x.shape[1] or left + w > x.shape[2]:
            raise ValueError(f"crop {tuple(crop)} does not fit a {list(x.shape[1:])} grid")
        x = x[:, top : top + h, left : left + w]
    if pool > 1:
        c, h, w = x.shape[0], x.shape[1] // pool, x.shape[2] // pool
        if h == 0 or w == 0:
            raise ValueError(f"pool {pool} is larger than the {list(x.shape[1:])} grid")
        x = (
            x[:, : h * pool, : w * pool]
            .reshape(c, h, pool, w, pool)
            .mean(axis=(2, 4), dtype=np.float32)
        )
    return np.ascontiguousarray(x)


def plan_output(counts: Sequence[int], per_shard: int | None) -> list[int]:
    """Start offsets (global sample indices) of the output shards, plus the end.

    ``per_shard=None`` keeps the source's shard boundaries.
    """
    total = int(sum(counts))
    if per_shard is None:
        return [0, *np.cumsum([c for c in counts if c]).tolist()] if total else [0]
    return [*range(0, total, per_shard), total] if total else [0]


# -- reading --------------------------------------------------------------------------


def _read_range(
    shards: ShardSet, lo: int, hi: int, options: dict[str, Any], retry: RetryConfig
) -> Iterator[Sample]:
    """Source samples ``[lo, hi)`` in manifest order, read shard by shard."""
    starts = np.concatenate([[0], np.cumsum(shards.counts)]).astype(np.int64)
    rules = SampleRules.of(shards)  # the checks of every read path (key rule, specs, classes)
    s = int(np.searchsorted(starts, lo, side="right") - 1)
    while s < len(shards.urls) and starts[s] < hi:
        url, pos = shards.urls[s], int(starts[s])
        with open_shard(url, retry=retry, storage_options=options) as f:
            for key, members in iter_sample_members(f, shard=url):
                if pos >= hi:
                    break
                if pos >= lo:
                    yield check_sample(decode_sample(key, members, shard=url), rules, shard=url)
                pos += 1
        if pos < min(hi, int(starts[s + 1])):
            raise LoffError(
                f"shard {url!r} ended after {pos - int(starts[s])} samples, "
                f"manifest says {shards.counts[s]}"
            )
        s += 1


# -- the run --------------------------------------------------------------------------


@dataclass
class _Run:
    src: str
    dst: str
    config: ConvertConfig
    manifest: Manifest
    shards: ShardSet
    src_options: dict[str, Any]
    dst_options: dict[str, Any]
    retry: RetryConfig
    fs: Any = None
    root: str = ""

    @property
    def out_dtype(self) -> str:
        return self.config.dtype or self.manifest.features.dtype

    def record_path(self, j: int) -> str:
        return f"{self.root}/{RECORD_DIR}/{shard_name(self.config.prefix, j)[:-4]}.json"

    def sample(self, s: Sample) -> tuple[np.ndarray, dict[str, Any]]:
        feats = convert_features(s.features, pool=self.config.pool, crop=self.config.crop)
        keep = self.config.extras
        extras = {k: v for k, v in s.extras.items() if keep is None or k in keep}
        return feats, {
            k: (v.dequantize() if isinstance(v, codec.Quantized) else v) for k, v in extras.items()
        }


def _remove_stale(run: _Run, pending: list[int]) -> None:
    """Deletes temporary files a crashed run left for the shards about to be written."""
    names = {f".{shard_name(run.config.prefix, j)}.tmp-" for j in pending}
    for path in run.fs.ls(run.root, detail=False):
        base = path.rstrip("/").rsplit("/", 1)[-1]
        if any(base.startswith(n) for n in names):
            run.fs.rm(path)


def _per_shard(run: _Run) -> int | None:
    """Samples per output shard: ``max_samples``, lowered to fit ``max_bytes``."""
    cfg, per = run.config, run.config.max_samples
    if cfg.max_bytes is None:
        return per
    first = next(_read_range(run.shards, 0, 1, run.src_options, run.retry))
    feats, extras = run.sample(first)
    dtype = run.out_dtype
    members = encode_sample(first.key, feats, label=first.label, extras=extras, dtype=dtype)
    size = sum(512 + -(-len(b) // 512) * 512 for _, b in members)  # tar header + padded payload
    by_bytes = max(1, cfg.max_bytes // size)
    return by_bytes if per is None else min(per, by_bytes)


def _fingerprint(run: _Run, starts: list[int]) -> dict[str, Any]:
    return {
        "config": asdict(run.config),
        "source": run.src,
        "source_shards": [[s.name, s.samples, s.sha256] for s in run.manifest.shards],
        "starts": starts,
    }


def _check_previous(run: _Run, fingerprint: dict[str, Any], overwrite: bool) -> None:
    path = f"{run.root}/{RECORD_DIR}/config.json"
    if run.fs.exists(path):
        previous = json.loads(run.fs.cat_file(path))
        if previous == json.loads(redact_json_text(json.dumps(fingerprint))):
            return
        if not overwrite:
            raise LoffError(
                f"{run.dst!r} holds a conversion with other settings or another source; "
                "pass --overwrite (overwrite=True in Python) to replace it"
            )
        run.fs.rm(f"{run.root}/{RECORD_DIR}", recursive=True)
    run.fs.makedirs(f"{run.root}/{RECORD_DIR}", exist_ok=True)
    write_json(path, fingerprint, fs=run.fs)  # atomic on local disk, secrets redacted


def _write_shard(run: _Run, j: int, lo: int, hi: int, bar: Any) -> None:
    wcfg = WriterConfig(
        prefix=run.config.prefix,
        max_samples=hi - lo + 1,
        max_bytes=1 << 62,
        dtype=run.out_dtype,
        start_index=j,
        nonfinite=run.config.nonfinite,
    )
    with ShardWriter(run.dst, wcfg, **run.dst_options) as writer:
        for s in _read_range(run.shards, lo, hi, run.src_options, run.retry):
            feats, extras = run.sample(s)
            writer.write(s.key, feats, label=s.label, extras=extras)
            bar.update(1)
    write_json(run.record_path(j), writer.record(), fs=run.fs)


def _finish(run: _Run, num_shards: int) -> Manifest:
    records = [json.loads(run.fs.cat_file(run.record_path(j))) for j in range(num_shards)]
    source = {
        **run.manifest.source,
        "converted_from": redact_text(run.src),
        "convert": asdict(run.config),
    }
    if run.config.pool > 1 and isinstance(source.get("pool"), int):
        source["pool"] = source["pool"] * run.config.pool
    manifest = Manifest.from_records(
        records, classes=run.manifest.classes, source=source, skipped=list(run.manifest.skipped)
    )
    manifest.save(run.dst, **run.dst_options)
    return manifest


def _check_fit(run: _Run) -> None:
    """Refuses settings the source cannot take, before anything is written."""
    cfg, have = run.config, sorted(run.manifest.extras)
    unknown = sorted(set(cfg.extras or ()) - set(have))
    if unknown:
        raise ConfigMismatch(
            f"extras {','.join(unknown)}: not in {run.src!r}, which has {have or 'no extras'}"
        )
    shape = run.manifest.features.shape
    if len(shape) != 3:
        if cfg.crop is not None or cfg.pool > 1:
            raise ConfigMismatch(
                f"{'crop' if cfg.crop else 'pool'}: needs (C, H, W) features, "
                f"{run.src!r} has {list(shape)}"
            )
        return
    grid = [int(shape[1]), int(shape[2])]
    if cfg.crop is not None:
        top, left, h, w = cfg.crop
        if top + h > grid[0] or left + w > grid[1]:
            raise ConfigMismatch(
                f"crop {','.join(map(str, cfg.crop))} does not fit the "
                f"{grid[0]}x{grid[1]} grid of {run.src!r}"
            )
        grid = [h, w]
    if cfg.pool > min(grid):
        raise ConfigMismatch(
            f"pool {cfg.pool} is larger than the {grid[0]}x{grid[1]} grid"
            f"{' after the crop' if cfg.crop else ''} of {run.src!r}; at most {min(grid)}"
        )


def convert(
    src: str,
    dst: str,
    config: ConvertConfig | None = None,
    *,
    src_options: dict[str, Any] | None = None,
    dst_options: dict[str, Any] | None = None,
    retry: RetryConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Manifest:
    """Converts the dataset at ``src`` into a new dataset at ``dst``; returns its manifest.

    Re-running the same call resumes (complete output shards are kept). ``src_options`` and
    ``dst_options`` are fsspec storage options of either end.

    Raises:
        LocationError: if ``dst`` is ``src`` or inside it (or, with ``overwrite``, ``src`` is
            inside ``dst``).
        LoffError: if ``dst`` holds a conversion with other settings (unless ``overwrite``),
            or the source is unreadable (naming the shard and sample key).
    """
    cfg, retry = config or ConvertConfig(), retry or RetryConfig()
    src, dst = str(src).rstrip("/"), str(dst).rstrip("/")
    check_destination(
        posixpath.dirname(src) if src.endswith(".json") else src, dst, both_ways=overwrite
    )
    run = _start(src, dst, cfg, dict(src_options or {}), dict(dst_options or {}), retry)
    starts = plan_output(run.shards.counts, _per_shard(run))
    if starts[-1] == 0:
        raise LoffError(f"{src!r} holds no samples")
    _check_previous(run, _fingerprint(run, starts), overwrite)
    _write_pending(run, starts, progress)
    return _finish(run, len(starts) - 1)


def _start(
    src: str, dst: str, cfg: ConvertConfig, src_options: dict, dst_options: dict, retry: RetryConfig
) -> _Run:
    """The run: the source's manifest and shards, checked against ``cfg``; the output's fs."""
    manifest = load_manifest(src, src_options, retry)
    shards = resolve_source(src, src_options, retry)
    run = _Run(src, dst, cfg, manifest, shards, src_options, dst_options, retry)
    _check_fit(run)
    run.fs, run.root = filesystem(dst, dst_options, retry)
    run.root = run.root.rstrip("/")
    return run


def _write_pending(run: _Run, starts: list[int], progress: bool) -> None:
    """Writes every output shard without a record (the others are complete), with a bar."""
    from tqdm.auto import tqdm

    pending = [j for j in range(len(starts) - 1) if not run.fs.exists(run.record_path(j))]
    _remove_stale(run, pending)
    done = starts[-1] - sum(starts[j + 1] - starts[j] for j in pending)
    bar = tqdm(
        total=starts[-1],
        initial=done,
        unit="sample",
        desc="convert",
        disable=not progress,
        dynamic_ncols=True,
    )
    with bar:
        for j in pending:
            _write_shard(run, j, starts[j], starts[j + 1], bar)
