"""Map-style access: ``ds[i]`` is sample ``i`` in manifest order (a ``torch`` ``Dataset``).

For evaluation, debugging and visualisation. A sample is found by its shard's index, the
byte offset where each sample starts (and each key): read from the manifest when its
shards carry one (``loffdata index DIR``, or written by a recent writer), else learnt by
reading the shard once, sequentially, on its first access (the documented fallback; later
accesses to that shard are random). A sample is then one read of its byte range (and the
next header, to see that the sample ends where its index says): a ``pread`` locally, one
range request over HTTP or S3, pinned to the object version of the shard's first answer.
Every sample read is checked against the key the index names, and then by the checks of
every read path (:mod:`loffdata.stream.checks`); errors name the true byte offset.
"""

from __future__ import annotations

import io
import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from loffdata.errors import ShardReadError
from loffdata.format.codec import Quantized
from loffdata.format.sample import Sample, decode_sample
from loffdata.format.shardindex import check_coverage
from loffdata.format.tar import iter_sample_spans, read_sample_at
from loffdata.safeio import open_regular
from loffdata.storage.pinned import Pin, get_range
from loffdata.storage.retry import RetryConfig, with_retries
from loffdata.storage.shardfile import filesystem, is_local, open_shard
from loffdata.stream.checks import SampleRules, check_sample, sample_position
from loffdata.stream.sources import ShardSet, resolve_source

__all__ = ["IndexedDataset"]

_LOOK_AHEAD = 1024  # bytes read past a sample: the next header (or the end marker)
_OPEN_FILES = 16


class _Window(io.BytesIO):
    """Bytes read from byte ``base`` of a shard of ``size`` bytes, as the tar reader's file."""

    def __init__(self, data: bytes, size: int):
        super().__init__(data)
        self.size = size


def _as_tensor(value: Any) -> Any:
    """A writable torch tensor of an array (int8 dequantised); other values as they are."""
    import torch

    if isinstance(value, Quantized):
        value = value.dequantize()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.array(value, copy=True))
    return value


class IndexedDataset(Dataset):
    """``ds[i]``: sample ``i`` of the dataset (manifest order), read by its byte offset.

    Args:
        source: anything :class:`~loffdata.stream.dataset.StreamingDataset` takes.
        storage_options: fsspec options; a list gives each shard its own (used by mixes).
        retry: timeouts and retries of remote reads.
        shards: an already resolved shard set (then ``source`` is ignored).
        rules: what each shard's samples must be (one per shard; a mix gives each its
            source's classes and label table); default: the shard set's.

    Items are dicts ``{"key", "index", "features", "label", **extras}``, as the
    streaming dataset yields them without ``batch_size``, but with features and extras as
    writable torch tensors (int8 dequantised), so a plain ``DataLoader`` collates them;
    :meth:`item` returns the stored form (numpy views, ``Quantized``), as ``ds[i]`` does.
    """

    def __init__(
        self,
        source: Any = None,
        *,
        storage_options: dict[str, Any] | Sequence[dict[str, Any]] | None = None,
        retry: RetryConfig | None = None,
        shards: ShardSet | None = None,
        rules: Sequence[SampleRules] | None = None,
    ):
        self.retry = retry or RetryConfig()
        per_shard = isinstance(storage_options, (list, tuple))
        self.shards = (
            shards
            if shards is not None
            else resolve_source(source, None if per_shard else storage_options, self.retry)
        )
        n = len(self.shards.urls)
        self.options = list(storage_options) if per_shard else [dict(storage_options or {})] * n
        self.rules = list(rules) if rules is not None else [SampleRules.of(self.shards)] * n
        self._pins: dict[int, Pin] = {}  # shard -> the object version its first answer came from
        self.starts = np.concatenate([[0], np.cumsum(self.shards.counts)]).astype(np.int64)
        #: shard -> (offsets, keys); from the manifest's index, or learnt by one pass
        self.index: dict[int, tuple[np.ndarray, tuple[str, ...]]] = {}
        #: shards whose index had to be learnt by reading them (in this process)
        self.scanned = 0
        self._files: OrderedDict[int, Any] = OrderedDict()
        self._fs: dict[int, tuple[Any, str]] = {}  # shard -> (filesystem, path)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, i: int) -> dict[str, Any]:
        """Sample ``i`` ready for a plain ``DataLoader``: features and extras as writable torch
        tensors, int8 dequantised to float32 (``item(i)`` gives the stored form)."""
        return {k: _as_tensor(v) for k, v in self.item(i).items()}

    def item(self, i: int) -> dict[str, Any]:
        """Sample ``i`` as stored, like the streamed items: numpy views, int8 as ``Quantized``."""
        i = sample_position(i, len(self))
        s = int(np.searchsorted(self.starts, i, side="right") - 1)
        sample = self.sample(s, i - int(self.starts[s]))
        return {
            "key": sample.key,
            "index": i,
            "features": sample.features,
            "label": sample.label,
            **sample.extras,
        }

    def sample(self, s: int, j: int) -> Sample:
        """Sample ``j`` of shard ``s``, decoded and checked against the index and the specs.

        Raises:
            ShardReadError: naming the shard and byte offset when the bytes there are not
                the sample the index names.
            SampleError: naming the shard and key when the sample does not decode or does
                not match the dataset's feature spec.
        """
        offsets, keys = self._index(s)
        url, lo, hi = self.shards.urls[s], int(offsets[j]), int(offsets[j + 1])
        data = self._read(s, lo, hi)
        size = self.shards.sizes[s] or lo + len(data)
        key, members, _ = read_sample_at(_Window(data, size), shard=url, start=lo, stop=hi)
        if key != keys[j]:
            raise ShardReadError(
                f"shard {url!r} at byte {lo}: expected sample {keys[j]!r}, found {key!r}"
            )
        return check_sample(decode_sample(key, members, shard=url), self.rules[s], shard=url)

    # -- the index ------------------------------------------------------------------------

    def _index(self, s: int) -> tuple[np.ndarray, tuple[str, ...]]:
        if s not in self.index:
            known = getattr(
                self.shards, "index", None
            )  # per-shard (offsets, keys) where the manifest has them
            got = (
                (known.get(s) if hasattr(known, "get") else known[s]) if known else None
            )  # None: unusable sidecar
            entry = (
                (np.asarray(got[0], np.int64), tuple(got[1])) if got is not None else self._scan(s)
            )
            if got is not None and is_local(
                self.shards.urls[s]
            ):  # the index covers the shard exactly
                with open_regular(self.shards.urls[s].removeprefix("file://"), what="shard") as f:
                    check_coverage(f, entry[0], shard=self.shards.urls[s])
            self.index[s] = entry
        return self.index[s]

    def _scan(self, s: int) -> tuple[np.ndarray, tuple[str, ...]]:
        """Learns the offsets and keys of shard ``s`` by reading it once."""
        url, offsets, keys, end = self.shards.urls[s], [], [], 0
        with self._open_stream(s) as f:
            for key, _, span in iter_sample_spans(f, shard=url):
                offsets.append(span.begin)
                keys.append(key)
                end = span.end
        if len(keys) != self.shards.counts[s]:
            raise ShardReadError(
                f"shard {url!r} holds {len(keys)} samples, manifest says {self.shards.counts[s]}"
            )
        self.scanned += 1
        return np.asarray([*offsets, end], np.int64), tuple(keys)

    # -- reading --------------------------------------------------------------------------

    def _open_stream(self, s: int) -> Any:
        url = self.shards.urls[s]
        if is_local(url):
            return open_shard(url)
        fs, path = filesystem(url, self.options[s], self.retry)
        return open_shard(url, fs=fs, path=path, retry=self.retry)

    def _read(self, s: int, lo: int, hi: int) -> bytes:
        """Bytes ``[lo, hi)`` and up to :data:`_LOOK_AHEAD` more (fewer at the shard's end)."""
        url, size = self.shards.urls[s], self.shards.sizes[s]
        end = hi + _LOOK_AHEAD if size is None else min(hi + _LOOK_AHEAD, max(size, hi))
        if is_local(url):
            data = os.pread(self._fd(s), end - lo, lo)
        else:
            if s not in self._fs:
                self._fs[s] = filesystem(url, self.options[s], self.retry)
            fs, path = self._fs[s]
            pin = self._pins.setdefault(s, Pin(url, size))
            data = with_retries(
                lambda: get_range(fs, path, lo, end, pin, strict=True), url=url, retry=self.retry
            )
        if len(data) < hi - lo:
            raise ShardReadError(
                f"shard {url!r}: {len(data)} bytes at byte {lo}, the index says {hi - lo}"
            )
        return data

    def _fd(self, s: int) -> int:
        f = self._files.get(s)
        if f is None:
            path = self.shards.urls[s].removeprefix("file://")
            try:
                f = self._files[s] = open_regular(
                    path, what="shard", buffering=0
                )  # kept open across calls
            except OSError as err:
                raise ShardReadError(
                    f"shard {self.shards.urls[s]!r} is missing or not readable: {err}"
                ) from err
            while len(self._files) > _OPEN_FILES:
                self._files.popitem(last=False)[1].close()
        self._files.move_to_end(s)
        return f.fileno()

    def close(self) -> None:
        """Closes the shard files kept open."""
        while self._files:
            self._files.popitem()[1].close()

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers open their own files
        state = dict(self.__dict__)
        state["_files"], state["_fs"] = OrderedDict(), {}
        state["_pins"] = {}
        return state
