"""The per-shard indexes of a shard set, loaded lazily by the process that reads the shard.

:class:`ShardIndexes` is what :attr:`~loffdata.stream.sources.ShardSet.index` holds: per
shard, ``(offsets, keys)``. An index in a sidecar (``shard-000001.idx``) is read on first
use (memory-mapped locally: its pages are shared by every process; fetched whole
remotely), and at most :data:`MAX_LOADED` are held at a time, so the bytes a process holds
for indexes do not grow with the dataset. Pickling it (to a worker) carries only the
references, never a loaded index.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from loffdata.errors import LoffError, ManifestError, ShardReadError
from loffdata.format.manifest import ShardInfo
from loffdata.format.shardindex import ShardIndex, read_index
from loffdata.safeio import fetch_remote
from loffdata.util import is_local

__all__ = ["MAX_LOADED", "ShardIndexes", "join_indexes"]

#: Most sidecar indexes a process holds at once (each about 16 bytes a sample plus keys).
MAX_LOADED = 64
_log = logging.getLogger(__name__)

Index = tuple[np.ndarray, Sequence[str]]


class ShardIndexes(Sequence):
    """Per shard, its index ``(offsets as int64, keys)``; ``indexes[s]`` loads it if needed.

    Args:
        urls: the shards' URLs (a sidecar is found beside its shard).
        infos: the shards' manifest entries (sample count, bytes, sha256, index).
        storage_options: fsspec options for remote sidecars.
    """

    def __init__(
        self, urls: list[str], infos: list[ShardInfo], storage_options: dict[str, Any] | None = None
    ):
        self.urls, self.infos, self.storage_options = urls, infos, dict(storage_options or {})
        self._loaded: OrderedDict[int, Index] = OrderedDict()
        self._set: dict[int, Index] = {}
        self.failed: dict[int, LoffError] = {}

    def __len__(self) -> int:
        return len(self.infos)

    def __getitem__(self, s: int) -> Index:  # type: ignore[override]
        got = self.get(s)
        if got is None:
            raise ShardReadError(
                f"shard {self.urls[s]!r} has no usable index: {self.failed.get(s)}"
            )
        return got

    def __setitem__(self, s: int, index: Index) -> None:
        self._set[s] = index

    def __iter__(self) -> Iterator[Index]:
        return (self[s] for s in range(len(self)))

    def get(self, s: int) -> Index | None:
        """Shard ``s``'s index, or ``None`` if its sidecar cannot be used (missing, damaged,
        stale or forged: logged once; the shard is then read in sequence, checked as if it
        had no index)."""
        if s in self._set:
            return self._set[s]
        info = self.infos[s]
        if info.offsets is not None:
            return info.offsets.view(np.int64), info.keys
        if s in self._loaded:
            self._loaded.move_to_end(s)
            return self._loaded[s]
        if s in self.failed:
            return None
        return self._load(s, info)

    def loaded(self, s: int) -> Index | None:
        """Shard ``s``'s index if it is in memory already (nothing is read)."""
        if s in self._set:
            return self._set[s]
        info = self.infos[s]
        if info.offsets is not None:
            return info.offsets.view(np.int64), info.keys
        return self._loaded.get(s)

    def _sidecar(self, s: int) -> str:
        url, info = self.urls[s], self.infos[s]
        if not url.endswith(info.name):
            raise ShardReadError(f"cannot place the index {info.index_file!r} beside shard {url!r}")
        return url[: len(url) - len(info.name)] + info.index_file

    def _load(self, s: int, info: ShardInfo) -> Index | None:
        try:
            index = read_index(
                self._sidecar(s),
                samples=info.samples,
                shard_bytes=info.bytes,
                sha256=info.sha256,
                **self.storage_options,
            )
        except LoffError as err:
            return self._fail(s, err)
        return self._keep(s, index)

    def _fail(self, s: int, err: LoffError) -> None:
        self.failed[s] = err
        _log.warning("%s; reading shard %r in sequence, without its index", err, self.urls[s])

    def _keep(self, s: int, index: ShardIndex) -> Index:
        got = self._loaded[s] = (index.offsets.view(np.int64), index.keys)
        while len(self._loaded) > MAX_LOADED:
            self._loaded.popitem(last=False)
        return got

    def prefetch(self, shards: Iterable[int]) -> None:
        """Loads the indexes of ``shards`` (at most :data:`MAX_LOADED`) not in memory yet;
        remote sidecars are fetched concurrently, one round trip for all of them instead of
        one each. Checked exactly as :meth:`get` checks them."""
        todo = [
            s
            for s in dict.fromkeys(shards)
            if self.loaded(s) is None and s not in self.failed and self.infos[s].index_file
        ][:MAX_LOADED]
        remote = [s for s in todo if not is_local(self.urls[s])]
        for s in todo:
            if s not in remote:
                self.get(s)
        sidecars = {}
        for s in remote:
            try:
                sidecars[s] = self._sidecar(s)
            except LoffError as err:
                self._fail(s, err)
        got = fetch_remote(list(sidecars.values()), **self.storage_options)
        for (s, url), buf in zip(sidecars.items(), got):
            self._accept(s, url, buf)

    def _accept(self, s: int, url: str, buf: bytes | Exception) -> None:
        info, where = self.infos[s], f"index {url!r}"
        try:
            if isinstance(buf, Exception):
                raise ManifestError(f"{where} cannot be read: {buf}")
            index = ShardIndex.from_buffer(
                buf, samples=info.samples, shard_bytes=info.bytes, sha256=info.sha256, where=where
            )
        except LoffError as err:
            self._fail(s, err)
            return
        self._keep(s, index)

    def offsets(self) -> _Field:
        """A lazy sequence of each shard's offsets."""
        return _Field(self, 0)

    def keys(self) -> _Field:
        """A lazy sequence of each shard's keys."""
        return _Field(self, 1)

    @property
    def held_bytes(self) -> int:
        """Bytes of index data this process holds in memory (memory maps not counted twice)."""
        return sum(o.nbytes + len(k) * 8 + len(k._blob) for o, k in self._loaded.values())

    def __getstate__(self) -> dict[str, Any]:  # a worker loads what it reads
        return {**self.__dict__, "_loaded": OrderedDict(), "failed": {}}


class _Field(Sequence):
    """``indexes.offsets()[s]`` / ``indexes.keys()[s]`` without loading the other shards."""

    def __init__(self, indexes: ShardIndexes, which: int):
        self.indexes, self.which = indexes, which

    def __len__(self) -> int:
        return len(self.indexes)

    def __getitem__(self, s: int) -> Any:  # type: ignore[override]
        return self.indexes[s][self.which]


class _Joined(ShardIndexes):
    """The indexes of several shard sets, one after the other (a mix's sources)."""

    def __init__(self, parts: list[Sequence[Index]]):
        super().__init__([], [])
        self.parts = parts
        self.starts = np.cumsum([0, *map(len, parts)])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, s: int) -> Index:  # type: ignore[override]
        if s in self._set:
            return self._set[s]
        part, local = self._part(s)
        return part[local]

    def get(self, s: int) -> Index | None:
        if s in self._set:
            return self._set[s]
        part, local = self._part(s)
        return part.get(local) if isinstance(part, ShardIndexes) else part[local]

    def loaded(self, s: int) -> Index | None:
        if s in self._set:
            return self._set[s]
        part, local = self._part(s)
        return part.loaded(local) if isinstance(part, ShardIndexes) else part[local]

    def prefetch(self, shards: Iterable[int]) -> None:
        by_part: dict[int, list[int]] = {}
        for s in shards:
            p = int(np.searchsorted(self.starts, s, side="right")) - 1
            by_part.setdefault(p, []).append(s - int(self.starts[p]))
        for p, local in by_part.items():
            if isinstance(self.parts[p], ShardIndexes):
                self.parts[p].prefetch(local)

    def _part(self, s: int) -> tuple[Sequence[Index], int]:
        p = int(np.searchsorted(self.starts, s, side="right")) - 1
        return self.parts[p], s - int(self.starts[p])


def join_indexes(parts: list[Sequence[Index]]) -> Sequence[Index]:
    """The indexes of several shard sets as one sequence, loading nothing."""
    return _Joined(parts)
