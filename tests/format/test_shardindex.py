"""Index sidecars (``shard-000001.idx``): byte layout, checks, old inline manifests, coverage."""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter

import numpy as np
import pytest

from loffdata.errors import LoffError, ManifestError, ShardReadError
from loffdata.format.manifest import Manifest
from loffdata.format.shardindex import INDEX_MAGIC, ShardIndex, check_coverage, read_index
from loffdata.stream.dataset import StreamingDataset
from tests.craft import archive, member, sample


def _sidecar(root, info):
    return read_index(
        str(root / info.index_file),
        samples=info.samples,
        shard_bytes=info.bytes,
        sha256=info.sha256,
    )


def _delivered(root, **kw):
    return Counter(
        i
        for b in StreamingDataset(root, batch_size=3, shuffle=False, **kw)
        for i in b["index"].tolist()
    )


def test_the_byte_layout_is_what_docs_format_md_says(make_dataset):
    root, _ = make_dataset(n=5, shard_size=5)
    info = Manifest.load(str(root)).shards[0]
    data = (root / info.index_file).read_bytes()
    n, size, k = (int.from_bytes(data[a : a + 8], "little") for a in (8, 16, 56))
    assert (
        data[:8] == INDEX_MAGIC
        and n == 5
        and size == info.bytes
        and data[24:56] == bytes.fromhex(info.sha256)
    )
    offsets = np.frombuffer(data, "<u8", n + 1, 64).tolist()
    starts = np.frombuffer(data, "<u8", n + 1, 64 + 8 * (n + 1)).tolist()
    blob = data[64 + 16 * (n + 1) : 64 + 16 * (n + 1) + k]
    assert [blob[a:b].decode() for a, b in zip(starts, starts[1:])] == [
        f"s{i:07d}" for i in range(5)
    ]
    assert offsets[0] == 0 and offsets[-1] + 1024 <= info.bytes and sorted(offsets) == offsets
    assert (
        data[-32:] == hashlib.sha256(data[:-32]).digest()
        and len(data) == 64 + 16 * (n + 1) + k + 32
    )


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: d[:-1] + bytes([d[-1] ^ 1]), "checksum"),
        (lambda d: d[:70] + bytes([d[70] ^ 1]) + d[71:], "checksum"),
        (lambda d: b"NOTANIDX" + d[8:], "not a loffdata index"),
        (lambda d: d[:8] + (10**12).to_bytes(8, "little") + d[16:], "declares|is for"),
        (lambda d: d[:-40], "bytes, its header says|checksum"),
        (lambda d: b"", "not a loffdata index"),
    ],
)
def test_a_damaged_sidecar_is_a_manifest_error_naming_it(make_dataset, damage, message):
    root, _ = make_dataset(n=5, shard_size=5)
    info = Manifest.load(str(root)).shards[0]
    path = root / info.index_file
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ManifestError, match=message) as err:
        _sidecar(root, info)
    assert info.index_file in str(err.value)


def test_a_stale_or_borrowed_sidecar_is_refused(make_dataset):
    root, _ = make_dataset(n=8, shard_size=4)
    a, b = Manifest.load(str(root)).shards
    (root / a.index_file).write_bytes((root / b.index_file).read_bytes())  # the other shard's
    with pytest.raises(ManifestError, match="is stale"):
        _sidecar(root, a)


def test_an_unusable_sidecar_falls_back_to_reading_the_shard_in_sequence(make_dataset, caplog):
    root, _ = make_dataset(n=12, shard_size=4)
    info = Manifest.load(str(root)).shards[1]
    path = root / info.index_file
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    assert _delivered(root) == Counter(range(12))  # every sample once, shard 1 read in sequence
    assert "checksum mismatch" in caplog.text and "in sequence" in caplog.text
    path.unlink()
    assert _delivered(root, shuffle_buffer=12) == Counter(range(12))


def test_a_forged_sidecar_is_checked_key_by_key(make_dataset):
    root, _ = make_dataset(n=8, shard_size=4)
    info = Manifest.load(str(root)).shards[0]
    real = _sidecar(root, info)
    keys = list(real.keys)
    keys[1], keys[2] = keys[2], keys[1]  # a valid, checksummed sidecar with other keys
    forged = ShardIndex.from_lists(real.offsets.tolist(), keys)
    (root / info.index_file).write_bytes(
        forged.to_bytes(shard_bytes=info.bytes, sha256=info.sha256)
    )
    with pytest.raises(ShardReadError, match="its index says"):
        _delivered(root)
    with pytest.raises(LoffError, match="index says"):
        list(StreamingDataset(root, shuffle=False))  # sequential, sample by sample


def _old_inline(root):
    d = json.loads((root / "manifest.json").read_text())
    for s, info in zip(d["shards"], Manifest.load(str(root)).shards):
        index = _sidecar(root, info)
        s["index"] = {"offsets": index.offsets.tolist(), "keys": list(index.keys)}
        (root / info.index_file).unlink()
    (root / "manifest.json").write_text(json.dumps(d))


def test_an_old_inline_index_is_read_once_and_held_compactly(make_dataset, monkeypatch):
    root, _ = make_dataset(n=12, shard_size=4)
    _old_inline(root)
    reads = []
    import loffdata.format.manifest as manifest_module

    real_load = manifest_module.loads_json  # the one parse of a manifest's text
    monkeypatch.setattr(
        manifest_module, "loads_json", lambda *a, **kw: reads.append(1) or real_load(*a, **kw)
    )
    m = Manifest.load(str(root))
    assert len(reads) == 1
    info = m.shards[0]
    assert isinstance(info.offsets, np.ndarray) and info.offsets.dtype == np.dtype("<u8")
    assert info.keys == ("s0000000", "s0000001", "s0000002", "s0000003") and info.index_file is None
    reads.clear()
    assert (
        _delivered(root) == Counter(range(12)) and len(reads) == 1
    )  # the dataset reads it once too
    assert not list(root.glob("*.idx"))


def test_loffdata_index_moves_an_inline_index_into_sidecars(make_dataset):
    from loffdata.format.index import index_dataset

    root, _ = make_dataset(n=8, shard_size=4)
    _old_inline(root)
    index_dataset(str(root))
    d = json.loads((root / "manifest.json").read_text())
    assert [s["index"] for s in d["shards"]] == [
        {"file": "shard-000000.idx"},
        {"file": "shard-000001.idx"},
    ]
    assert _delivered(root) == Counter(range(8))


# -- item 7: an index covers its shard exactly -----------------------------------------


def _forge(root, name, data, samples, offsets, keys):
    (root / name).write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    index = ShardIndex.from_lists(offsets, keys)
    (root / name.replace(".tar", ".idx")).write_bytes(
        index.to_bytes(shard_bytes=len(data), sha256=sha)
    )
    m = Manifest.load(str(root))
    d = m.to_dict()
    d["shards"] = [
        {
            "name": name,
            "samples": samples,
            "bytes": len(data),
            "sha256": sha,
            "index": {"file": name.replace(".tar", ".idx")},
        }
    ]
    d["num_samples"] = samples
    (root / "manifest.json").write_text(json.dumps(d))


def _spans(data):
    from loffdata.format.tar import iter_sample_spans

    return [(k, s.begin, s.end) for k, _, s in iter_sample_spans(io.BytesIO(data), shard="x")]


@pytest.fixture
def forgeable(make_dataset):
    root, _ = make_dataset(n=1, shard_size=1, shape=(4, 2, 2))
    for p in root.glob("shard-*"):
        p.unlink()
    return root


def test_an_index_that_skips_a_leading_sample_is_refused(forgeable):
    data = archive(sample("a", 0), sample("b", 1), sample("c", 2), sample("d", 0))
    spans = _spans(data)
    _forge(
        forgeable, "x.tar", data, 3, [b for _, b, _ in spans[1:]] + [spans[-1][2]], ["b", "c", "d"]
    )
    with pytest.raises(ShardReadError, match="first sample starts at byte 0, its index says"):
        _delivered(forgeable)
    with pytest.raises(LoffError, match="no readable sample"):  # skipped, counted, never delivered
        list(StreamingDataset(forgeable, batch_size=3, shuffle=False, on_error="skip"))


def test_an_index_that_starts_inside_another_member_is_refused(forgeable):
    hidden = sample("h", 2)
    data = archive(sample("a", 0) + member("a.txt", hidden + bytes(1024)), sample("b", 1))
    start = (
        next(b for k, b, _ in _spans(data) if k == "a") + len(sample("a", 0)) + 512
    )  # inside a.txt
    end = start + len(hidden)
    assert data[start : start + 512] == hidden[:512]
    _forge(forgeable, "x.tar", data, 1, [start, end], ["h"])
    with pytest.raises(ShardReadError, match="its index says"):
        _delivered(forgeable)


def test_an_index_that_ends_before_the_last_sample_is_refused(forgeable):
    data = archive(sample("a", 0), sample("b", 1), sample("c", 2))
    spans = _spans(data)
    _forge(forgeable, "x.tar", data, 2, [spans[0][1], spans[1][1], spans[1][2]], ["a", "b"])
    with pytest.raises(ShardReadError, match="sample 'c' at byte .* is past the end of its index"):
        _delivered(forgeable)


def test_check_coverage_accepts_an_exact_index_with_leading_non_sample_members():
    data = archive(member("dir/", b"", kind=b"5"), sample("a", 0), sample("b", 1))
    spans = _spans(data)
    assert spans[0][1] == 512
    check_coverage(io.BytesIO(data), np.array([512, spans[1][1], spans[1][2]]), shard="x")
    with pytest.raises(ShardReadError):
        check_coverage(io.BytesIO(data), np.array([spans[1][1], spans[1][2]]), shard="x")


def test_map_style_reads_check_coverage_and_fall_back_too(forgeable, make_dataset):
    data = archive(sample("a", 0), sample("b", 1), sample("c", 2), sample("d", 0))
    spans = _spans(data)
    _forge(
        forgeable, "x.tar", data, 3, [b for _, b, _ in spans[1:]] + [spans[-1][2]], ["b", "c", "d"]
    )
    with pytest.raises(ShardReadError, match="first sample starts at byte 0"):
        StreamingDataset(forgeable)[0]
    root, _ = make_dataset(n=8, shard_size=4, name="plain")
    (root / "shard-000001.idx").write_bytes(b"damaged")
    ds = StreamingDataset(root)
    assert [ds[i]["key"] for i in range(8)] == [
        f"s{i:07d}" for i in range(8)
    ] and ds.indexed().scanned == 1
