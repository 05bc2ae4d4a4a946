"""Weighted mixing of datasets: one stream over several sources, in fixed proportions.

``MixedDataset(Mix([...]), batch_size=256)`` is a :class:`StreamingDataset` whose epoch is
a mix of its sources (plan: :mod:`loffdata.stream.mixplan`): deterministic in (seed, epoch),
resumable exactly, equal batches on every rank, ``len()`` exact. Each source is read with
its own storage options; feature specs must agree; labels are unified by class name
(``classes="union"``) or kept as stored (``classes="separate"``); each source's channel
statistics are kept (:attr:`MixedDataset.source_stats`). See ``docs/mixing.md``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from loffdata.errors import LoffError
from loffdata.format.manifest import Manifest, TensorSpec
from loffdata.format.sample import Sample
from loffdata.format.stats import ChannelStats
from loffdata.stream.checks import SampleRules
from loffdata.stream.dataset import StreamingDataset
from loffdata.stream.discover import find_datasets
from loffdata.stream.indexed import IndexedDataset
from loffdata.stream.indexes import join_indexes
from loffdata.stream.mixplan import (
    epoch_counts,
    mix_sequence,
    proportions,
)
from loffdata.stream.plan import global_order, rank_length
from loffdata.stream.reader import ReadContext, SampleReader
from loffdata.stream.sources import ShardSet, load_manifest, resolve_source

__all__ = ["Source", "Mix", "MixedDataset", "CLASS_POLICIES"]

CLASS_POLICIES = ("auto", "union", "separate")


@dataclass(frozen=True)
class Source:
    """One dataset of a mix.

    Attributes:
        url: a dataset directory or manifest URL (or anything :func:`resolve_source` takes).
        weight: relative weight (normalised over the mix); ``None`` on every source weighs
            them by their sizes.
        storage_options: fsspec options of this source; ``None``: the dataset's own.
        name: a label for messages and :attr:`MixedDataset.source_names` (default: the URL).
    """

    url: Any
    weight: float | None = None
    storage_options: dict[str, Any] | None = None
    name: str | None = None


@dataclass(frozen=True)
class Mix:
    """Several datasets streamed as one.

    Attributes:
        sources: :class:`Source` objects, or plain URLs (weighted by size).
        epoch_size: ``"total"`` (the sum of the sources' sizes), ``"smallest"`` (the epoch
            ends when the first source, at its proportion, runs out: nothing repeats), or a
            sample count.
        classes: ``"union"``: labels re-numbered into the union of the class names (in
            order of first appearance, source by source); ``"separate"``: labels as stored
            in each source; ``"auto"``: union when every source names its classes.
    """

    sources: Sequence[Source | str | os.PathLike] = field(default_factory=tuple)
    epoch_size: str | int = "total"
    classes: str = "auto"

    def __post_init__(self) -> None:
        srcs = tuple(s if isinstance(s, Source) else Source(os.fspath(s)) for s in self.sources)
        object.__setattr__(self, "sources", srcs)
        if not srcs:
            raise ValueError("a mix needs at least one source")
        if self.classes not in CLASS_POLICIES:
            raise ValueError(f"classes must be one of {CLASS_POLICIES}, got {self.classes!r}")
        given = [s.weight is not None for s in srcs]
        if any(given) and not all(given):
            raise ValueError("give a weight to every source of the mix, or to none")

    @classmethod
    def from_directory(
        cls, url: str, *, storage_options: dict[str, Any] | None = None, **kw: Any
    ) -> Mix:
        """A mix of the datasets found below ``url`` (weighted by size unless you set weights
        later)."""
        found = find_datasets(str(url), storage_options)
        if not found:
            raise LoffError(f"no datasets (directories with a manifest.json) below {url!r}")
        return cls([Source(u, storage_options=storage_options) for u in found], **kw)


def _source_reader(mix: MixedDataset, i: int, reuse_buffers: bool) -> SampleReader:
    """A reader of source ``i`` with its own storage options and the mix's error policy."""
    context = ReadContext(
        shards=mix.source_shards[i],
        storage_options=mix.source_options[i],
        retry=mix.retry,
        cache=mix.cache,
        batched=bool(mix.batch_size),
        prefetch=mix.prefetch,
        labels=mix.label_tables[i],
    )
    return SampleReader(context, mix._policy, reuse_buffers=reuse_buffers)


class _MixReader:
    """Reads global indices of the mix by handing each source's part to its own reader."""

    def __init__(self, mix: MixedDataset, *, reuse_buffers: bool):
        self.ds, self.shards = mix, mix.shards
        self.policy = mix._policy
        self.readers = [
            _source_reader(mix, i, reuse_buffers) for i in range(len(mix.source_shards))
        ]
        self.random_access = all(r.random_access for r in self.readers)
        self.sampled = any(r.sampled for r in self.readers)
        self.bases = mix.source_bases

    def plan_reads(
        self,
        indices: np.ndarray,
        window: int,
        *,
        batch: int | None = None,
        first: int | None = None,
    ) -> None:
        """Each source's reader learns its part of the order (its remote shards are prefetched)."""
        src = np.searchsorted(self.bases, indices, side="right") - 1
        head = src[: window if first is None else first]
        for i, reader in enumerate(self.readers):
            reader.plan_reads(
                indices[src == i] - int(self.bases[i]),
                window,
                batch=batch,
                first=int((head == i).sum()),
            )

    def each(
        self,
        indices: np.ndarray,
        destinations: dict[int, Any] | None = None,
        *,
        random: bool = True,
    ) -> Iterator[tuple[int, Sample]]:
        src = np.searchsorted(self.bases, indices, side="right") - 1
        for i in np.unique(src).tolist():
            base, mine = int(self.bases[i]), indices[src == i]
            dest = (
                None
                if destinations is None
                else {g - base: destinations[g] for g in mine.tolist() if g in destinations}
            )
            for local, sample in self.readers[i].each(mine - base, dest, random=random):
                yield local + base, sample  # labels unified by the source's reader

    def load(self, indices: np.ndarray) -> dict[int, Sample]:
        return dict(self.each(indices))

    def close(self) -> None:
        for r in self.readers:
            r.close()


def _concat(shard_sets: list[ShardSet], names: list[str]) -> ShardSet:
    """One shard set of all sources; feature specs must agree, extras common to all kept."""
    first = shard_sets[0].features
    for s in shard_sets:
        if (s.features.shape, s.features.dtype) != (first.shape, first.dtype):
            listing = ", ".join(
                f"{n}: {x.features.dtype}{list(x.features.shape)}"
                for x, n in zip(shard_sets, names)
            )
            raise LoffError(f"the sources of a mix need one feature spec; they have {listing}")
    extras: dict[str, TensorSpec] = {}
    for name in set.intersection(*(set(s.extras) for s in shard_sets)):
        specs = {(s.extras[name].shape, s.extras[name].dtype) for s in shard_sets}
        if len(specs) > 1:
            raise LoffError(
                f"extra {name!r} differs between the sources of the mix: {sorted(specs)}"
            )
        extras[name] = shard_sets[0].extras[name]
    optional: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(ShardSet)}
    if "index" in names:  # per-shard sample indexes: kept when every source has them
        indexed = all(s.index is not None for s in shard_sets)
        optional["index"] = join_indexes([s.index for s in shard_sets]) if indexed else None
    return ShardSet(
        [u for s in shard_sets for u in s.urls],
        [c for s in shard_sets for c in s.counts],
        [z for s in shard_sets for z in s.sizes],
        first,
        extras,
        **optional,
    )


def _manifest(
    src: Source, shards: ShardSet, options: dict[str, Any], retry: Any
) -> Manifest | None:
    known = getattr(shards, "manifest", None)
    if known is not None:
        return known
    text = os.fspath(src.url) if isinstance(src.url, (str, os.PathLike)) else ""
    if not text or text.endswith(".tar") or "{" in text or "*" in text:
        return None
    return load_manifest(text, options, retry)


def _refuse_empty(names: list[str], sizes: list[int], weights: list[float] | None) -> None:
    """An empty source with weight > 0 is refused: its share of the epoch could not be
    delivered, so ``len()`` would promise batches that never come (weight 0 is fine)."""
    for name, size, w in zip(names, sizes, weights or [None] * len(sizes)):
        if size == 0 and w is not None and w > 0:
            raise LoffError(
                f"source {name!r} of the mix has no samples but weight {w}; give it weight 0 or "
                "leave it out"
            )


def _label_tables(
    mix: Mix, manifests: list[Manifest | None], names: list[str]
) -> tuple[list[str] | None, list]:
    missing = [n for m, n in zip(manifests, names) if m is None or m.classes is None]
    if mix.classes == "separate" or (mix.classes == "auto" and missing):
        return None, [None] * len(manifests)
    if missing:
        raise LoffError(
            f"classes='union' needs class names in every source; {missing} have none (use "
            "classes='separate')"
        )
    union: dict[str, int] = {}
    for m in manifests:
        for c in m.classes:
            union.setdefault(c, len(union))
    return list(union), [np.array([union[c] for c in m.classes], dtype=np.int64) for m in manifests]


class MixedDataset(StreamingDataset):
    """A :class:`StreamingDataset` over a :class:`Mix` of datasets.

    Args:
        mix: the sources, their weights, the epoch size and the class policy.
        *args, **options: the other arguments of :class:`StreamingDataset` (``seed``,
            ``batch_size``, ``storage_options`` (the default of every source) ...).

    Items are those of :class:`StreamingDataset`; ``index`` is the position in the
    concatenated shard lists (:meth:`source_of` gives the source).
    """

    def __init__(self, mix: Mix, *args: Any, **options: Any):
        if not isinstance(mix, Mix):
            raise TypeError(f"MixedDataset takes a Mix, got {type(mix).__name__}")
        self.mix = mix
        super().__init__(mix, *args, **options)

    def _resolve(self, source: Any) -> ShardSet:
        mix: Mix = source
        self.source_names = [s.name or str(s.url) for s in mix.sources]
        self.source_options = [
            dict(self.storage_options if s.storage_options is None else s.storage_options)
            for s in mix.sources
        ]
        self.source_shards = [
            resolve_source(s.url, o, self.retry) for s, o in zip(mix.sources, self.source_options)
        ]
        manifests = [
            _manifest(s, sh, o, self.retry)
            for s, sh, o in zip(mix.sources, self.source_shards, self.source_options)
        ]
        self.source_classes = [None if m is None else m.classes for m in manifests]
        #: each source's channel statistics (``None`` without a manifest)
        self.source_stats: list[ChannelStats | None] = [
            None if m is None else m.stats for m in manifests
        ]
        self.classes, self.label_tables = _label_tables(mix, manifests, self.source_names)
        sizes = [s.num_samples for s in self.source_shards]
        weights = None if mix.sources[0].weight is None else [s.weight for s in mix.sources]
        _refuse_empty(self.source_names, sizes, weights)
        self.proportions = proportions(sizes, weights)
        #: samples each source contributes to every epoch
        self.epoch_counts = epoch_counts(sizes, weights, mix.epoch_size)
        self.source_bases = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        return _concat(self.source_shards, self.source_names)

    def _reader(self, *, reuse_buffers: bool) -> _MixReader:
        return _MixReader(self, reuse_buffers=reuse_buffers)

    # -- the plan -------------------------------------------------------------------------

    @property
    def epoch_length(self) -> int:
        """Samples in one epoch of the mix, over all ranks (before padding or dropping)."""
        return int(self.epoch_counts.sum())

    def epoch_sequence(self, epoch: int) -> np.ndarray:
        """Global sample indices of ``epoch`` in mixed order (before the rank split)."""
        counts = [s.counts for s in self.source_shards]
        return mix_sequence(
            counts,
            self.epoch_counts,
            seed=self.config.seed,
            epoch=epoch,
            shuffle=self.config.shuffle,
        )

    def __len__(self) -> int:
        length = rank_length(self.epoch_length, self.rank_world()[1], self.config.partial)
        b = self.batch_size or 1
        return length // b if self.config.drop_last else -(-length // b)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The mixed epoch's global order (the mixed sequence, window-shuffled), before any
        split."""
        return global_order(self.epoch_sequence(epoch), self.config, epoch)

    def _fingerprint(self) -> dict[str, Any]:
        mix = [
            [int(s.num_samples), float(p), int(n)]
            for s, p, n in zip(self.source_shards, self.proportions, self.epoch_counts)
        ]
        return {**super()._fingerprint(), "mix": mix, "classes": self.mix.classes}

    # -- sources --------------------------------------------------------------------------

    def indexed(self) -> IndexedDataset:
        """A map-style view of the concatenated shards, each read with its source's options
        and checked by its source's rules (classes, label unification), as when streamed."""
        if getattr(self, "_indexed", None) is None:
            options = [o for o, sh in zip(self.source_options, self.source_shards) for _ in sh.urls]
            rules = [
                SampleRules.of(sh, labels=table)
                for sh, table in zip(self.source_shards, self.label_tables)
            ]
            per_shard = [r for r, sh in zip(rules, self.source_shards) for _ in sh.urls]
            self._indexed = IndexedDataset(
                shards=self.shards, storage_options=options, retry=self.retry, rules=per_shard
            )
        return self._indexed

    def __getitem__(self, i: int) -> dict[str, Any]:
        """Sample ``i`` of the concatenated sources, its label unified as when streamed."""
        return self.indexed().item(i)

    def source_of(self, index: Any) -> np.ndarray:
        """The source id of each global sample index (an item's or batch's ``index``)."""
        idx = np.asarray(index.numpy() if hasattr(index, "numpy") else index, dtype=np.int64)
        return (np.searchsorted(self.source_bases, idx, side="right") - 1).astype(np.int64)

    def stats(self) -> ChannelStats | None:
        """Channel statistics of the mixture an epoch draws (sources weighted by their share
        of the epoch); ``None`` if a source has none."""
        if any(s is None for s in self.source_stats):
            return None
        out = ChannelStats()
        for s, n, size in zip(
            self.source_stats, self.epoch_counts, (x.num_samples for x in self.source_shards)
        ):
            if n and s.count:
                f = n / size
                out.merge(ChannelStats(count=max(1, round(s.count * f)), mean=s.mean, m2=s.m2 * f))
        return out

    def summary_manifest(self) -> Manifest:
        """A manifest-like summary (no shards): the feature spec, the unified classes and the
        mixture's statistics, as :class:`~loffdata.loader.LoffLoader` uses for augmentation."""
        return Manifest(
            shards=[],
            features=self.shards.features,
            classes=self.classes,
            extras=dict(self.shards.extras),
            stats=self.stats(),
            source={"mix": self.source_names},
        )
