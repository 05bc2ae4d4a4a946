"""Property: batched reading delivers exactly what sequential reading finds, once each.

Hypothesis draws shard sets the format allows but that defeat layout prediction (extra
members of random sizes, captions, undeclared extras, missing labels, members in any
order), sometimes with consecutive duplicate keys (which it does not allow), with or
without an index (``loffdata index``). Batched reading (workers 0 and 2, shuffle on and
off) must deliver every sample exactly once with its own key, features and label, or raise
the documented error when sequential reading does.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from loffdata.errors import ShardReadError
from loffdata.format import codec
from loffdata.format.index import index_dataset
from loffdata.format.sample import decode_sample
from loffdata.format.tar import iter_sample_members
from loffdata.storage.prefetch.by_shard import PrefetchConfig
from loffdata.stream.dataset import StreamingDataset
from tests.craft import archive, features, member, write_crafted
from tests.props import examples
from tests.servers import serving

_EXTRAS = ["unknown", "txt", "more.msgpack"]
DOCUMENTED = "duplicate sample key|goes on past byte|index says"


def _extra(key: str, suffix: str, size: int) -> bytes:
    data = codec.encode(np.zeros(size, np.uint8)) if suffix == "more.msgpack" else b"c" * size
    return member(f"{key}.{suffix}", data)


@st.composite
def shard_sets(draw, max_shards: int = 2, max_samples: int = 8):
    """``(shards, indexed)``: per shard a list of ``(key, value, label, [(suffix, size)])``."""
    shards, value = [], 0
    for s in range(draw(st.integers(1, max_shards))):
        samples = []
        for i in range(draw(st.integers(1, max_samples))):
            dup = i > 0 and draw(st.integers(0, 11)) == 0
            key = samples[-1][0] if dup else f"s{s}k{i}"
            label = draw(st.none() | st.integers(0, 2))
            suffixes = draw(st.lists(st.sampled_from(_EXTRAS), unique=True, max_size=2))
            extras = [
                (x, draw(st.integers(0, 1500) | st.sampled_from([1, 512, 1024]))) for x in suffixes
            ]
            samples.append((key, value, label, extras))
            value += 1
        shards.append(samples)
    return shards, draw(st.booleans())


def _write(root: Path, shards, indexed: bool) -> Path:
    files, counts = {}, {}
    for s, samples in enumerate(shards):
        parts = []
        for key, value, label, extras in samples:
            parts.append(member(f"{key}.feat.msgpack", features(value)))
            parts += [member(f"{key}.cls", str(label).encode())] if label is not None else []
            parts += [_extra(key, x, n) for x, n in extras]
        files[f"shard-{s}.tar"], counts[f"shard-{s}.tar"] = archive(*parts), len(samples)
    write_crafted(root, files, counts)
    if indexed:
        _index(root, shards)
    return root


def _index(root: Path, shards) -> None:
    """Indexes the dataset; consecutive duplicate keys are refused (it stays unindexed), and
    any other case must come out indexed, so that no indexed case silently reads unindexed."""
    dup = any(a[0] == b[0] for samples in shards for a, b in zip(samples, samples[1:]))
    if dup:
        with pytest.raises(ShardReadError, match="duplicate sample key"):
            index_dataset(str(root))
    else:
        assert all(info.indexed for info in index_dataset(str(root)).shards)


def _sequential(root: Path, names: list[str]) -> list[tuple[str, int, int]] | ShardReadError:
    """(key, value, label) of every sample, read by the plain tar reader; or its error."""
    out = []
    try:
        for name in names:
            with open(root / name, "rb") as f:
                for key, members in iter_sample_members(f, shard=name):
                    s = decode_sample(key, members)
                    out.append((key, int(s.features.flat[0]), -1 if s.label is None else s.label))
    except ShardReadError as err:
        return err
    return out


def _batched(root: Path | str, workers: int, shuffle: bool) -> list[tuple[int, str, int, int]]:
    by_sample = PrefetchConfig(
        by_sample=True, sample_requests=4
    )  # remote: the first window by sample
    ds = StreamingDataset(
        root, batch_size=3, shuffle=shuffle, shuffle_buffer=4, seed=7, prefetch=by_sample
    )
    items = DataLoader(ds, batch_size=None, num_workers=workers) if workers else ds
    got = []
    for b in items:
        for i, key, x, y in zip(b["index"].tolist(), b["key"], b["features"], b["label"].tolist()):
            got.append((i, key, int(x.flatten()[0]), y))
    return got


def check(shards, indexed: bool, workers: tuple[int, ...] = (0, 2), *, http: bool = False) -> None:
    """Batched reading (local, or over loopback HTTP: the first window by sample, then in
    blocks) delivers what the plain tar reader reads, each sample once, or a documented error."""
    with tempfile.TemporaryDirectory() as tmp:
        root = _write(Path(tmp) / "ds", shards, indexed)
        expected = _sequential(root, [f"shard-{s}.tar" for s in range(len(shards))])
        with serving(root) if http else contextlib.nullcontext() as server:
            source = server.url if http else root
            for w in workers:
                for shuffle in (False, True):
                    if isinstance(expected, ShardReadError):
                        with pytest.raises(ShardReadError, match=DOCUMENTED):
                            _batched(source, w, shuffle)
                        continue
                    got = _batched(source, w, shuffle)
                    assert sorted(i for i, *_ in got) == list(
                        range(len(expected))
                    )  # each exactly once
                    assert {i: rest for i, *rest in got} == {
                        i: list(e) for i, e in enumerate(expected)
                    }


@settings(max_examples=examples(8), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shard_sets())
def test_batched_reading_is_sequential_reading_exactly_once(case):
    check(*case)


@settings(max_examples=examples(6), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shard_sets())
def test_batched_reading_over_http_by_sample_is_sequential_reading_exactly_once(case):
    check(*case, workers=(0,), http=True)


@pytest.mark.slow
@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shard_sets(max_shards=4, max_samples=20))
def test_batched_reading_is_sequential_reading_exactly_once_many(case):
    check(*case, workers=(0,))


def test_duplicates_unindexed_and_varied_indexed_examples():
    """The two kinds of example the property must cover, drawn by hand (not left to chance)."""
    dup = [[("a", 0, 1, []), ("a", 1, None, [("txt", 9)]), ("b", 2, 0, [])]]
    check(dup, indexed=False, workers=(0,))
    varied = [
        [
            (
                f"k{i}",
                i,
                None if i % 3 else 1,
                [("unknown", 700 * i), ("more.msgpack", 513)][: i % 3],
            )
            for i in range(9)
        ]
    ]
    check(varied, indexed=True, workers=(0,))
    # two samples without a label shift the rest by one sample span: predicting offsets from
    # the first sample's layout (first + i * span) made index 3 deliver sample 4
    shifted = [[(f"k{i}", i, None if i in (1, 2) else 0, []) for i in range(6)]]
    check(shifted, indexed=True, workers=(0,))
    for case in (varied, shifted, dup):  # over HTTP: the first window by sample, then in blocks
        check(case, indexed=case is not dup, workers=(0,), http=True)
    captioned = [
        [(f"k{i}", i, 0, [("txt", 1000)] if i == 1 else []) for i in range(6)]
    ]  # +2 blocks: one span
    check(captioned, indexed=True, workers=(0,))
