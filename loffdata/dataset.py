"""``StreamingDataset``: an IterableDataset that streams samples out of shards anywhere.

The order, the split across ranks and workers, padding and resumption are computed by
:mod:`loffdata.plan` from (seed, epoch) and the shards' sample counts; this module reads
the samples the plan names and hands them out one by one or as whole batches assembled in
shared memory. See ``docs/streaming.md``.
"""

from __future__ import annotations

import json
import os
import posixpath
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from loffdata import codec
from loffdata.cache import CacheConfig, ShardCache
from loffdata.errors import LoffError, ManifestError, SampleError, ShardReadError
from loffdata.format import Sample, decode_sample, features_match
from loffdata.manifest import Manifest, TensorSpec, manifest_url
from loffdata.plan import (
    Layout,
    PlanConfig,
    PlanState,
    RankPlan,
    WorkerPlan,
    rank_length,
    rank_plan,
    resume_plan,
    sample_locations,
    window_size,
)
from loffdata.remote import ResumableReader, RetryConfig, filesystem, is_local, open_shard
from loffdata.tarstream import iter_sample_members

__all__ = ["StreamingDataset", "ShardSet", "resolve_source", "load_manifest", "STATE_VERSION"]

STATE_VERSION = 1
_ON_ERROR = ("raise", "skip")
_MAX_OPEN_SHARDS = 8


# ---------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class ShardSet:
    """The shards of a dataset: URLs, sample counts, byte sizes and tensor specs."""

    urls: list[str]
    counts: list[int]
    sizes: list[int | None]
    features: TensorSpec
    extras: dict[str, TensorSpec] = field(default_factory=dict)

    @property
    def num_samples(self) -> int:
        return sum(self.counts)


def _expand(source: str) -> list[str]:
    if "{" in source and ".." in source:
        from braceexpand import braceexpand

        return list(braceexpand(source))
    return [source]


def resolve_source(
    source: str | os.PathLike | Sequence[str],
    storage_options: dict[str, Any] | None = None,
    retry: RetryConfig | None = None,
) -> ShardSet:
    """Finds the shards and their sample counts for any supported source.

    A directory or ``.json`` URL is read as a manifest. A list of shard URLs or a brace
    pattern uses the ``manifest.json`` beside the shards when it lists all of them, and
    otherwise reads every shard once to count its samples (slow for remote data).
    """
    options, retry = dict(storage_options or {}), retry or RetryConfig()
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if not text.endswith(".tar") and "{" not in text:
            manifest = load_manifest(text, options, retry)
            return _from_manifest(
                manifest, manifest.shard_urls(text), [s.name for s in manifest.shards]
            )
        urls = _expand(text)
    else:
        urls = [os.fspath(u) for u in source]
    if not urls:
        raise ValueError("no shards given")
    return _from_sibling_manifest(urls, options, retry) or _scan(urls, options, retry)


def load_manifest(url: str, storage_options: dict[str, Any], retry: RetryConfig) -> Manifest:
    """:meth:`Manifest.load`, with remote reads retried like shard reads.

    Raises:
        ManifestError: naming the manifest URL when it is missing, unreachable or invalid.
    """
    murl = manifest_url(url)
    if is_local(murl):
        return Manifest.load(murl)
    fs, path = filesystem(murl, storage_options, retry)
    try:
        data = ResumableReader(murl, fs, path, retry=retry).read()
    except ShardReadError as err:
        missing = isinstance(err.__cause__, FileNotFoundError)
        raise ManifestError(
            f"no manifest at {murl!r}" if missing else f"cannot read manifest {murl!r}: {err}"
        ) from None
    try:
        return Manifest.from_dict(json.loads(data), where=repr(murl))
    except json.JSONDecodeError as err:
        raise ManifestError(f"manifest {murl!r} is not valid JSON: {err}") from None


def _from_manifest(manifest: Manifest, urls: list[str], names: list[str]) -> ShardSet:
    by_name = {s.name: s for s in manifest.shards}
    infos = [by_name[n] for n in names]
    return ShardSet(
        urls,
        [s.samples for s in infos],
        [s.bytes for s in infos],
        manifest.features,
        dict(manifest.extras),
    )


def _from_sibling_manifest(
    urls: list[str], options: dict[str, Any], retry: RetryConfig
) -> ShardSet | None:
    root = posixpath.dirname(urls[0])
    if any(posixpath.dirname(u) != root for u in urls):
        return None
    try:
        manifest = load_manifest(root or ".", options, retry)
    except (LoffError, OSError):
        return None
    names = [posixpath.basename(u) for u in urls]
    if not set(names) <= {s.name for s in manifest.shards}:
        return None
    return _from_manifest(manifest, urls, names)


def _scan(urls: list[str], options: dict[str, Any], retry: RetryConfig) -> ShardSet:
    counts, first = [], None
    for url in urls:
        with _open_any(url, options, retry) as f:
            n = 0
            for key, members in iter_sample_members(f, shard=url):
                first = first or decode_sample(key, members, shard=url)
                n += 1
        counts.append(n)
    if first is None:
        raise ShardReadError(f"no samples in shards {urls[:3]!r}...")
    extras = {k: TensorSpec(tuple(v.shape), _dtype_name(v)) for k, v in first.extras.items()}
    spec = TensorSpec(tuple(first.features.shape), _dtype_name(first.features), "CHW")
    return ShardSet(urls, counts, [None] * len(urls), spec, extras)


def _open_any(url: str, options: dict[str, Any], retry: RetryConfig) -> BinaryIO:
    if is_local(url):
        return open_shard(url)
    fs, path = filesystem(url, options, retry)
    return open_shard(url, fs=fs, path=path, retry=retry)


def _dtype_name(x: Any) -> str:
    if isinstance(x, codec.Quantized):
        return "int8"
    return next((n for n, dt in codec.DTYPES.items() if dt == x.dtype), str(x.dtype))


# ------------------------------------------------------------------------ shard reading


class _ShardCursor:
    """A shard read sequentially; hands out the samples asked for, in increasing order."""

    def __init__(self, url: str, file: BinaryIO, count: int):
        self.url, self.file, self.count = url, file, count
        self.members = iter_sample_members(file, shard=url)
        self.pos = 0

    def take(self, local: int) -> tuple[str, dict[str, bytes]]:
        """Sample number ``local`` (skipping those before it without decoding)."""
        while True:
            try:
                key, members = next(self.members)
            except StopIteration:
                raise ShardReadError(
                    f"shard {self.url!r} ended after {self.pos} samples, manifest says {self.count}"
                ) from None
            self.pos += 1
            if self.pos > local:
                return key, members

    def close(self) -> None:
        self.file.close()


class _Reader:
    """Reads samples by global index for one process, with open-shard reuse and error policy."""

    def __init__(self, ds: StreamingDataset):
        self.ds, self.shards = ds, ds.shards
        self.cursors: OrderedDict[int, _ShardCursor] = OrderedDict()
        self.broken: dict[int, int] = {}  # shard -> first unreadable sample
        self.fs: dict[str, tuple[Any, str]] = {}
        self.cache = ShardCache(ds.cache) if ds.cache is not None else None

    def each(self, indices: np.ndarray) -> Iterator[tuple[int, Sample]]:
        """Yields ``(global index, sample)`` for the sorted, unique ``indices`` as they are read.

        In skip mode, samples that cannot be read or decoded are left out (and counted).
        """
        shard_ids, locals_ = sample_locations(self.shards.counts, indices)
        bounds = np.flatnonzero(np.diff(shard_ids)) + 1
        for lo, hi in zip([0, *bounds.tolist()], [*bounds.tolist(), len(indices)]):
            yield from self._each_in_shard(int(shard_ids[lo]), indices[lo:hi], locals_[lo:hi])

    def load(self, indices: np.ndarray) -> dict[int, Sample]:
        """``dict(each(indices))``."""
        return dict(self.each(indices))

    def _each_in_shard(
        self, s: int, gids: np.ndarray, locs: np.ndarray
    ) -> Iterator[tuple[int, Sample]]:
        done, limit = 0, self.broken.get(s, 1 << 62)
        try:
            for gid, loc in zip(gids.tolist(), locs.tolist()):
                if loc >= limit:
                    break
                sample = self._read_one(s, loc)
                done += 1
                if sample is not None:
                    yield gid, sample
        except ShardReadError as err:
            self._drop_cursor(s)
            self.broken[s] = min(limit, int(locs[done]))
            self.ds._skip(err, n=len(gids) - done)
            return
        if done < len(gids):
            msg = f"shard {self.shards.urls[s]!r} is unreadable from sample {limit} on (see the earlier error)"
            self.ds._skip(ShardReadError(msg), n=len(gids) - done)

    def _read_one(self, s: int, loc: int) -> Sample | None:
        cursor = self._cursor(s, loc)
        key, members = cursor.take(loc)
        if cursor.pos >= self.shards.counts[s]:
            self._drop_cursor(s)
        try:
            return self._decode(key, members, self.shards.urls[s])
        except SampleError as err:
            self.ds._skip(err, n=1)
            return None

    def _decode(self, key: str, members: dict[str, bytes], url: str) -> Sample:
        sample = decode_sample(key, members, shard=url)
        spec = self.shards.features
        problem = features_match(sample.features, spec.shape, spec.dtype)
        if problem:
            raise SampleError(problem, shard=url, key=key)
        for name, extra in self.shards.extras.items():
            self._check_extra(sample, name, extra, url)
        return sample

    def _check_extra(self, sample: Sample, name: str, spec: TensorSpec, url: str) -> None:
        value = sample.extras.get(name)
        if value is None:
            if self.ds.batch_size:
                raise SampleError(
                    f"sample has no extra {name!r}, which the manifest declares",
                    shard=url,
                    key=sample.key,
                )
            return
        if tuple(value.shape) != tuple(spec.shape):
            raise SampleError(
                f"extra {name!r} has shape {list(value.shape)}, manifest says {list(spec.shape)}",
                shard=url,
                key=sample.key,
            )

    def _cursor(self, s: int, loc: int) -> _ShardCursor:
        cur = self.cursors.get(s)
        if cur is None or cur.pos > loc:
            self._drop_cursor(s)
            cur = _ShardCursor(self.shards.urls[s], self._open(s), self.shards.counts[s])
            self.cursors[s] = cur
            while len(self.cursors) > _MAX_OPEN_SHARDS:
                self._drop_cursor(next(iter(self.cursors)))
        self.cursors.move_to_end(s)
        return cur

    def _drop_cursor(self, s: int) -> None:
        cur = self.cursors.pop(s, None)
        if cur is not None:
            cur.close()

    def _open(self, s: int) -> BinaryIO:
        url = self.shards.urls[s]
        if is_local(url):
            return open_shard(url)
        fs, path = self._filesystem(url)
        if self.cache is None:
            return ResumableReader(url, fs, path, retry=self.ds.retry)
        return self._open_cached(url, fs, path, self.shards.sizes[s])

    def _open_cached(self, url: str, fs: Any, path: str, size: int | None) -> BinaryIO:
        def opener() -> BinaryIO:
            return ResumableReader(url, fs, path, retry=self.ds.retry)

        for _ in range(3):  # another process may evict the file between get and open
            try:
                return open(self.cache.get(url, opener, size=size), "rb", buffering=1 << 20)  # noqa: SIM115
            except FileNotFoundError:
                continue
        raise ShardReadError(
            f"cached copy of shard {url!r} keeps disappearing; is cache_limit_bytes too small?"
        )

    def _filesystem(self, url: str) -> tuple[Any, str]:
        protocol = url.split("://", 1)[0]
        if protocol not in self.fs:
            self.fs[protocol] = filesystem(url, self.ds.storage_options, self.ds.retry)
        fs = self.fs[protocol][0]
        return fs, fs._strip_protocol(url)

    def close(self) -> None:
        for s in list(self.cursors):
            self._drop_cursor(s)


def _with_substitutes(
    reader: _Reader, indices: np.ndarray, window: int
) -> Iterator[tuple[int, Sample]]:
    """Yields ``(global index, sample)`` for ``indices`` in order, reading a window at a time.

    A sample that could not be read (skip mode) is replaced by the previous good sample of
    this worker, or, before the first good one, by the next good one, so counts never change.
    """
    last, debt = None, 0
    for lo in range(0, len(indices), window):
        chunk = indices[lo : lo + window]
        loaded = reader.load(np.unique(chunk))
        for gid in chunk.tolist():
            sample = loaded.get(gid)
            if sample is None:
                if last is None:
                    debt += 1
                    continue
                yield last
                continue
            last = (gid, sample)
            for _ in range(debt + 1):
                yield last
            debt = 0
    if debt:
        raise LoffError(
            f"on_error='skip' found no readable sample to stand in for {debt} unreadable ones"
        )


# ------------------------------------------------------------------------------ batches


def _numpy_view(t: torch.Tensor) -> np.ndarray:
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(codec.DTYPES["bfloat16"])
    return t.numpy()


class _BatchBuffer:
    """One batch preallocated as torch tensors (in shared memory inside workers), filled in place."""

    def __init__(self, shards: ShardSet, size: int, shared: bool):
        self.size = size
        self.tensors: dict[str, torch.Tensor] = {}
        spec = shards.features
        self._add("features", (size, *spec.shape), spec.dtype, shared)
        if spec.dtype == "int8":
            self._add("scale", (size, spec.shape[0] if spec.shape else 1), "float32", shared)
        self._add("label", (size,), "int64", shared)
        self._add("index", (size,), "int64", shared)
        for name, extra in shards.extras.items():
            self._add(name, (size, *extra.shape), extra.dtype, shared)
        self.extras = list(shards.extras)
        self.views = {k: _numpy_view(t) for k, t in self.tensors.items()}
        self.keys: list[str] = [""] * size

    def _add(self, name: str, shape: tuple[int, ...], dtype: str, shared: bool) -> None:
        t = torch.empty(shape, dtype=codec.torch_dtype(dtype))
        self.tensors[name] = t.share_memory_() if shared else t

    def put(self, i: int, gid: int, sample: Sample) -> None:
        """Copies a decoded sample into row ``i`` (one copy per tensor, from the payload view)."""
        v = self.views
        feats = sample.features
        if isinstance(feats, codec.Quantized):
            np.copyto(v["features"][i], feats.values)
            np.copyto(v["scale"][i], feats.scale)
        else:
            np.copyto(v["features"][i], feats)
        v["label"][i] = -1 if sample.label is None else sample.label
        v["index"][i] = gid
        self.keys[i] = sample.key
        for name in self.extras:
            value = sample.extras[name]  # presence and shape checked when decoded
            np.copyto(
                v[name][i],
                value.dequantize() if isinstance(value, codec.Quantized) else value,
                casting="unsafe",
            )

    def copy_row(self, i: int, src: _BatchBuffer, j: int) -> None:
        """Row ``i`` becomes a copy of row ``j`` of ``src``."""
        for name, view in self.views.items():
            view[i] = src.views[name][j]
        self.keys[i] = src.keys[j]

    def result(self) -> dict[str, Any]:
        return {**self.tensors, "key": self.keys}


class _RowFiller:
    """Skip mode for batches: a row whose sample failed gets a copy of the previous good row,
    or, before the first good row of the worker, of the next good one (batches wait for it)."""

    def __init__(self, shards: ShardSet):
        self.last = _BatchBuffer(shards, 1, shared=False)
        self.have_last = False
        self.pending_rows: list[tuple[_BatchBuffer, int]] = []
        self.pending: list[_BatchBuffer] = []

    def complete(
        self, rows: list[tuple[_BatchBuffer, int]], got: np.ndarray, bufs: list[_BatchBuffer]
    ) -> list[_BatchBuffer]:
        """Fills the failed rows of a window; returns the batches that are ready, in order."""
        good = None
        for (buf, i), ok in zip(rows, got.tolist()):
            if ok:
                good = (buf, i)
                for b, j in self.pending_rows:
                    b.copy_row(j, buf, i)
                self.pending_rows.clear()
            elif good is not None:
                buf.copy_row(i, *good)
            elif self.have_last:
                buf.copy_row(i, self.last, 0)
            else:
                self.pending_rows.append((buf, i))
        if good is not None:  # private copy: the consumer may change the batch in place
            self.last.copy_row(0, *good)
            self.have_last = True
        self.pending += bufs
        if self.pending_rows:
            return []
        ready, self.pending = self.pending, []
        return ready

    def finish(self) -> None:
        if self.pending_rows:
            raise LoffError(
                f"on_error='skip' found no readable sample to stand in for {len(self.pending_rows)} unreadable ones"
            )


def _batch_groups(sizes: np.ndarray, window: int) -> Iterator[np.ndarray]:
    """Consecutive runs of whole batches holding at most ``window`` samples (at least one batch)."""
    lo, total = 0, 0
    for hi, size in enumerate(sizes.tolist()):
        if total and total + size > window:
            yield sizes[lo:hi]
            lo, total = hi, 0
        total += size
    if lo < len(sizes):
        yield sizes[lo:]


def _fill_window(
    reader: _Reader, ids: np.ndarray, rows: list[tuple[_BatchBuffer, int]]
) -> np.ndarray:
    """Reads the samples of ``ids`` in file order, copying each into its row(s) at once."""
    where: dict[int, list[int]] = {}
    for p, gid in enumerate(ids.tolist()):
        where.setdefault(gid, []).append(p)
    got = np.zeros(len(ids), dtype=bool)
    for gid, sample in reader.each(np.unique(ids)):
        for p in where[gid]:
            buf, i = rows[p]
            buf.put(i, gid, sample)
            got[p] = True
    return got


def _window_batches(
    reader: _Reader, wplan: WorkerPlan, window: int, *, shared: bool
) -> Iterator[dict[str, Any]]:
    """Batches of a worker plan, one window at a time: samples go straight into their rows,
    so a window holds batch tensors, not payload bytes."""
    filler, pos = _RowFiller(reader.shards), 0
    for sizes in _batch_groups(wplan.batch_sizes, window):
        bufs = [_BatchBuffer(reader.shards, int(k), shared) for k in sizes.tolist()]
        rows = [(b, i) for b in bufs for i in range(b.size)]
        got = _fill_window(reader, wplan.indices[pos : pos + len(rows)], rows)
        pos += len(rows)
        for buf in filler.complete(rows, got, bufs):
            yield buf.result()
    filler.finish()


# ------------------------------------------------------------------------------ dataset


def _distributed_rank_world() -> tuple[int, int] | None:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return None


class StreamingDataset(IterableDataset):
    """Streams samples or ready-made batches out of tar shards (local, HTTP, S3, any fsspec URL).

    Args:
        source: a directory or manifest URL (``path``, ``http(s)://``, ``s3://``), a brace
            pattern of shard URLs, or a list of shard URLs (see :func:`resolve_source`).
        seed: base seed of the order.
        shuffle: shuffle shards and samples; ``False`` keeps manifest order.
        shuffle_buffer: samples per shuffle window (also how many samples a worker holds).
        batch_size: yield batches of this many samples, assembled in shared memory; ``None``
            yields single samples.
        rank: this process's rank (default: from ``torch.distributed`` if initialised, else 0).
        world_size: number of ranks (same default, else 1).
        partial: ``"pad"`` or ``"drop"``: how ranks are equalised (see :mod:`loffdata.plan`).
        drop_last: drop each rank's final partial batch.
        on_error: ``"raise"`` (strict) or ``"skip"`` (bad samples are replaced, counted in
            :attr:`skipped` and reported with :func:`warnings.warn`).
        storage_options: passed to fsspec (``endpoint_url``, ``anon``, ``key``/``secret`` ...).
        cache_dir: cache remote shards in this local directory.
        cache_limit_bytes: byte budget of the cache (``None``: unbounded).
        retry: timeouts and retries of remote reads.
    """

    def __init__(
        self,
        source: str | os.PathLike | Sequence[str],
        *,
        seed: int = 0,
        shuffle: bool = True,
        shuffle_buffer: int = 1024,
        batch_size: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        partial: str = "pad",
        drop_last: bool = False,
        on_error: str = "raise",
        storage_options: dict[str, Any] | None = None,
        cache_dir: str | os.PathLike | None = None,
        cache_limit_bytes: int | None = None,
        retry: RetryConfig | None = None,
    ):
        super().__init__()
        if on_error not in _ON_ERROR:
            raise ValueError(f"on_error must be one of {_ON_ERROR}, got {on_error!r}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.config = PlanConfig(
            seed=seed,
            shuffle=shuffle,
            shuffle_buffer=shuffle_buffer,
            partial=partial,
            drop_last=drop_last,
        )
        self.batch_size, self.on_error = batch_size, on_error
        self.storage_options = dict(storage_options or {})
        self.retry = retry or RetryConfig()
        self.cache = (
            None if cache_dir is None else CacheConfig(os.fspath(cache_dir), cache_limit_bytes)
        )
        self.shards = resolve_source(source, self.storage_options, self.retry)
        self._rank, self._world = rank, world_size
        self._dist = _distributed_rank_world()
        self.epoch = 0
        self.skipped = {"samples": 0, "errors": 0}
        self._resume: PlanState | None = None
        self._yielded = 0
        self._num_workers = 1

    # -- layout -------------------------------------------------------------------------

    def rank_world(self) -> tuple[int, int]:
        """``(rank, world_size)``: explicit arguments, else ``torch.distributed``, else (0, 1).

        The distributed values are remembered when first seen (at construction, ``len()``,
        ``state_dict()`` or iteration in the main process), since DataLoader worker
        processes do not have the process group: create the dataset after
        ``init_process_group`` or pass ``rank``/``world_size``.
        """
        live = _distributed_rank_world()
        if live is not None:
            self._dist = live
        found = self._dist or (0, 1)
        rank = self._rank if self._rank is not None else found[0]
        world = self._world if self._world is not None else found[1]
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is outside world_size {world}")
        return rank, world

    def _layout(self, num_workers: int) -> Layout:
        return Layout(
            world_size=self.rank_world()[1],
            num_workers=max(1, num_workers),
            batch_size=self.batch_size or 1,
        )

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch; a loaded state for another epoch is forgotten."""
        self.epoch = int(epoch)
        if self._resume is not None and self._resume.epoch != self.epoch:
            self._resume = None

    def __len__(self) -> int:
        """Items (samples, or batches with ``batch_size``) each rank yields per epoch."""
        length = rank_length(self.shards.num_samples, self.rank_world()[1], self.config.partial)
        b = self.batch_size or 1
        return length // b if self.config.drop_last else -(-length // b)

    # -- plans ----------------------------------------------------------------------------

    def _plan(self, num_workers: int) -> tuple[RankPlan, PlanState, int]:
        rank = self.rank_world()[0]
        layout = self._layout(num_workers)
        if self._resume is None:
            base = PlanState(epoch=self.epoch, layout=layout)
            return (
                rank_plan(self.shards.counts, self.config, layout, rank=rank, epoch=self.epoch),
                base,
                0,
            )
        return resume_plan(self.shards.counts, self.config, self._resume, layout, rank=rank)

    def _base(self, num_workers: int) -> PlanState:
        """The state that progress of the current iteration adds to (no plan computed)."""
        layout = self._layout(num_workers)
        r = self._resume
        if r is None:
            return PlanState(epoch=self.epoch, layout=layout)
        if (r.layout.world_size, r.layout.batch_size) == (layout.world_size, layout.batch_size):
            return r
        return PlanState(epoch=r.epoch, layout=layout, parent=r)

    def worker_plan(self, worker: int = 0, num_workers: int = 1) -> WorkerPlan:
        """What worker ``worker`` of ``num_workers`` yields this epoch (pure; reads nothing)."""
        plan, base, start = self._plan(num_workers)
        if start == 0 and base.layout.num_workers == max(1, num_workers):
            return plan.worker(worker)
        return plan.deal(start, max(1, num_workers), worker)

    # -- iteration ------------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        self._num_workers, self._yielded = num_workers, 0
        wplan = self.worker_plan(worker, num_workers)
        reader = _Reader(self)
        try:
            if self.batch_size:
                window = window_size(self.config.shuffle_buffer, self.batch_size)
                items = _window_batches(reader, wplan, window, shared=info is not None)
            else:
                items = self._singles(reader, wplan)
            for item in items:
                self._yielded += 1  # counted when handed out: a consumer may stop right after
                yield item
        finally:
            reader.close()

    def _singles(self, reader: _Reader, wplan: WorkerPlan) -> Iterator[dict[str, Any]]:
        for gid, s in _with_substitutes(reader, wplan.indices, self.config.shuffle_buffer):
            yield {"key": s.key, "index": gid, "features": s.features, "label": s.label, **s.extras}

    def _skip(self, err: Exception, *, n: int) -> None:
        """Applies the error policy to ``n`` unreadable samples: raise ``err``, or count and warn."""
        if self.on_error == "raise":
            raise err
        self.skipped["samples"] += n
        self.skipped["errors"] += 1
        warnings.warn(f"skipping {n} sample(s): {err}", RuntimeWarning, stacklevel=2)

    # -- state ----------------------------------------------------------------------------

    def state_dict(
        self, *, delivered: int | None = None, num_workers: int | None = None
    ) -> dict[str, Any]:
        """The resumable position in the epoch.

        Args:
            delivered: items (batches, or samples without ``batch_size``) the consumer has
                received from the current iteration, counted in DataLoader delivery order.
                ``None``: what this object yielded itself (iteration in this process).
            num_workers: DataLoader workers of the current iteration (``None``: the last
                iteration in this process, 1 if none; pass 1 for ``num_workers=0``).
        """
        workers = self._num_workers if num_workers is None else max(1, num_workers)
        base = self._base(workers)
        done = self._yielded if delivered is None else int(delivered)
        plan = PlanState(
            epoch=base.epoch,
            layout=base.layout,
            delivered=base.delivered + done,
            parent=base.parent,
        )
        return {"version": STATE_VERSION, **self._fingerprint(), "plan": plan.to_dict()}

    def _fingerprint(self) -> dict[str, Any]:
        c = self.config
        return {
            "seed": c.seed,
            "shuffle": c.shuffle,
            "shuffle_buffer": c.shuffle_buffer,
            "partial": c.partial,
            "drop_last": c.drop_last,
            "num_samples": self.shards.num_samples,
            "num_shards": len(self.shards.counts),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resumes from :meth:`state_dict`'s output: the next iteration yields the rest of its epoch.

        Raises:
            ValueError: if the state belongs to another dataset or order configuration.
        """
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported state version {state.get('version')!r}")
        mine = self._fingerprint()
        diff = {k: (state.get(k), v) for k, v in mine.items() if state.get(k) != v}
        if diff:
            raise ValueError(f"state does not match this dataset (state, dataset): {diff}")
        self._resume = PlanState.from_dict(state["plan"])
        self.epoch, self._yielded = self._resume.epoch, 0
