"""Random access into local shards: layouts, scatter reads, and every check failing closed."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
import torch

from loffdata.errors import SampleError
from loffdata.format import codec
from loffdata.format.sample import FEATURES_SUFFIX, decode_sample
from loffdata.format.tar import iter_sample_spans
from loffdata.format.writer import WriterConfig, write_dataset
from loffdata.stream.dataset import StreamingDataset
from loffdata.stream.scatter import AVAILABLE, SampleLayout, learn_layout, read_samples

pytestmark = pytest.mark.skipif(not AVAILABLE, reason="os.preadv is not available")

SHAPE = (8, 4, 4)
NBYTES = int(np.prod(SHAPE)) * 2  # float16


def first_layout(path) -> tuple[SampleLayout, int]:
    row = memoryview(bytearray(NBYTES))
    with open(path, "rb") as f:
        direct = lambda name, size: row if name.endswith(FEATURES_SUFFIX) else None  # noqa: E731
        _, members, span = next(iter_sample_spans(f, shard=str(path), direct=direct))
    layout = learn_layout(members, span.end - span.begin, span.first_header)
    assert layout is not None
    return layout, span.begin


def general_read(path) -> list[tuple[str, np.ndarray, int | None]]:
    with open(path, "rb") as f:
        out = []
        for key, members, _ in iter_sample_spans(f, shard=str(path)):
            s = decode_sample(key, members)
            out.append((key, np.array(s.features), s.label))
        return out


def scatter(
    path, layout: SampleLayout, begin: int, locs, keys=None
) -> tuple[list, list[np.ndarray]]:
    """Reads samples ``locs`` at ``begin + loc * span``, expecting ``keys`` (default: the
    writer's)."""
    rows = [np.zeros(NBYTES, dtype=np.uint8) for _ in locs]
    keys = keys or [f"s{i:07d}" for i in range(max(locs) + 1)]
    with open(path, "rb") as f:
        reads = [
            (f.fileno(), begin + loc * layout.span, memoryview(r)) for loc, r in zip(locs, rows)
        ]
        got = read_samples(layout, reads, keys=[keys[loc] for loc in locs])
    return got, [r.view(np.float16).reshape(SHAPE) for r in rows]


@pytest.fixture
def shard(make_dataset):
    root, manifest = make_dataset(12, 12, classes=13)  # labels 0..11: one and two digits
    return root / manifest.shards[0].name


def test_scatter_reads_equal_the_general_reader_in_any_order(shard):
    layout, begin = first_layout(shard)
    expected = general_read(shard)
    locs = [11, 3, 0, 7, 4, 10, 1]
    got, rows = scatter(shard, layout, begin, locs)
    for loc, sample, row in zip(locs, got, rows):
        key, feats, label = expected[loc]
        assert sample is not None and sample[0] == key
        decoded = decode_sample(*sample)
        np.testing.assert_array_equal(decoded.features, feats)
        np.testing.assert_array_equal(row, feats)  # the data went straight into the row
        assert decoded.label == label


def test_layout_is_shared_by_shards_of_one_dataset(make_dataset):
    root, manifest = make_dataset(20, 5)
    layouts = {first_layout(root / s.name)[0] for s in manifest.shards}
    assert len(layouts) == 1


def test_layout_needs_the_features_read_into_a_row(shard):
    with open(shard, "rb") as f:
        _, members, span = next(iter_sample_spans(f, shard=str(shard)))
    assert learn_layout(members, span.end - span.begin, span.first_header) is None


def _patch(path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _member_offsets(path, name: str) -> tuple[int, int]:
    with tarfile.open(path) as tar:
        m = tar.getmember(name)
        return m.offset, m.offset_data


@pytest.mark.parametrize(
    "damage, rejected",
    [
        # a sample's first header is also the header after the sample before it
        ("header byte", {4, 5}),
        ("checksum", {5}),
        ("head", {5}),
        ("label size", {5}),
        ("next header", {5, 6}),
        ("name", {5}),
    ],
)
def test_any_mismatch_rejects_the_samples_it_touches(shard, damage, rejected):
    layout, begin = first_layout(shard)
    feat_header, feat_data = _member_offsets(shard, "s0000005.feat.msgpack")
    cls_header, _ = _member_offsets(shard, "s0000005.cls")
    next_header, _ = _member_offsets(shard, "s0000006.feat.msgpack")
    if damage == "header byte":
        _patch(shard, feat_header + 108, b"7")  # uid field: checksum now wrong
    elif damage == "checksum":
        _patch(shard, cls_header + 148, b"0000000\0")
    elif damage == "head":
        _patch(shard, feat_data + 8, b"x")  # inside the payload's dtype string
    elif damage == "label size":
        _patch(shard, cls_header + 124, b"00000001001\0")  # a 513-byte label: 2 blocks
    elif damage == "next header":
        _patch(shard, next_header + 20, b"\xff")  # 5 is complete only if 6 starts cleanly
    elif damage == "name":
        with open(shard, "rb") as f:
            block = bytearray(f.read()[cls_header : cls_header + 512])
        block[:12] = b"s0000009.cls"  # valid header, but another key than its sample's
        block[148:156] = b"        "
        block[148:156] = b"%06o\0 " % sum(block)
        _patch(shard, cls_header, bytes(block))
    got, _ = scatter(shard, layout, begin, range(12))
    assert {i for i, g in enumerate(got) if g is None} == rejected


def test_short_file_and_wrong_offsets_are_rejected(shard):
    layout, begin = first_layout(shard)
    data = shard.read_bytes()
    shard.write_bytes(data[: begin + 11 * layout.span + 600])  # sample 11 cut short
    got, _ = scatter(shard, layout, begin, range(12))
    assert got[11] is None and all(g is not None for g in got[:11])
    with open(shard, "rb") as f:  # an offset that is not a sample's start
        row = memoryview(bytearray(NBYTES))
        assert read_samples(layout, [(f.fileno(), begin + 512, row)], keys=["s0000000"]) == [None]
        assert read_samples(
            layout, [(f.fileno(), begin + layout.span, row)], keys=["s0000000"]
        ) == [None]  # another key


def _write(path, samples) -> None:
    """A tar of (name, bytes) members, as the writer would lay them out."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in samples:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())


def test_a_sample_with_an_extra_member_is_left_to_the_general_reader(tmp_path):
    feats = [np.full(SHAPE, i, dtype=np.float16) for i in range(3)]
    members = []
    for i, x in enumerate(feats):
        members += [(f"k{i}.feat.msgpack", codec.encode(x)), (f"k{i}.cls", b"1")]
        if i == 1:
            members.append(("k1.more.msgpack", codec.encode(np.zeros(3, np.float32))))
    path = tmp_path / "x.tar"
    _write(path, members)
    layout, begin = first_layout(path)
    keys = ["k0", "k1", "k2"]
    got, _ = scatter(path, layout, begin, [0], keys)
    assert got[0] is not None
    got, _ = scatter(path, layout, begin, [1], keys)  # the header after its label is still key k1
    assert got == [None]


def test_dataset_batches_match_single_samples_and_report_bad_data(make_dataset):
    root, manifest = make_dataset(40, 10)
    singles = {int(s["index"]): s["features"] for s in StreamingDataset(root, seed=3)}
    for batch in StreamingDataset(root, seed=3, batch_size=8):
        for i, x in zip(batch["index"].tolist(), batch["features"]):
            np.testing.assert_array_equal(x.numpy(), singles[i])
    # a sample of another shape is refused by the scatter read; the general reader names it
    shard = root / manifest.shards[2].name
    with tarfile.open(shard) as tar:
        offset = tar.getmember("s0000023.feat.msgpack").offset_data
    payload = codec.encode(np.zeros((8, 4, 4), np.float32))[:40]  # a float32 head
    _patch(shard, offset, payload[:20])
    with pytest.raises(SampleError) as err:
        list(StreamingDataset(root, seed=3, batch_size=8))
    assert err.value.key == "s0000023" and err.value.shard.endswith(manifest.shards[2].name)


def test_datasets_of_mixed_layouts_are_all_read(tmp_path):
    items = [(f"a{i:03d}", np.full(SHAPE, i, np.float16), i % 3) for i in range(6)]
    items += [(f"longer_key_{i:03d}", np.full(SHAPE, i + 6, np.float16), None) for i in range(6)]
    write_dataset(str(tmp_path / "ds"), items, config=WriterConfig(max_samples=6, dtype=None))
    got = {}
    for batch in StreamingDataset(tmp_path / "ds", batch_size=4, shuffle_buffer=12):
        for i, x, y in zip(batch["index"].tolist(), batch["features"], batch["label"].tolist()):
            got[i] = (float(x[0, 0, 0]), y)
    assert got == {i: (float(i), i % 3 if i < 6 else -1) for i in range(12)}


@pytest.mark.parametrize("batch_dtype", [None, "float32", "bfloat16"])
def test_local_batches_are_read_by_random_access(make_dataset, monkeypatch, batch_dtype):
    import loffdata.stream.scatter as scatter_module

    root, _ = make_dataset(40, 10)
    calls, general = [], []
    real, real_general = scatter_module.read_samples, scatter_module.read_sample_at
    monkeypatch.setattr(
        scatter_module, "read_samples", lambda *a, **k: calls.append(len(a[1])) or real(*a, **k)
    )
    monkeypatch.setattr(
        scatter_module, "read_sample_at", lambda *a, **k: general.append(1) or real_general(*a, **k)
    )
    singles = {int(s["index"]): s["features"] for s in StreamingDataset(root, seed=5)}
    assert not calls  # single samples are read in sequence
    for batch in StreamingDataset(root, seed=5, batch_size=8, batch_dtype=batch_dtype):
        for i, x in zip(batch["index"].tolist(), batch["features"]):
            expect = torch.from_numpy(np.array(singles[i])).to(x.dtype)
            assert torch.equal(x, expect)
    # every sample came by random access: one per shard read the general way (which
    # teaches the shard's layout), the others with one preadv each
    assert len(general) == 4 and sum(calls) == 36


def test_a_loader_over_local_shards_holds_no_shuffle_window(make_dataset):
    from loffdata.loader import LoffLoader

    root, _ = make_dataset(64, 16)
    loader = LoffLoader(str(root), batch_size=4, num_workers=0, augment=None, shuffle_buffer=64)
    assert sum(len(x) for x, _ in loader) == 64
    assert len(loader.dataset._pool.buffers) <= 2  # not the 16 batches of a window


def test_more_shards_per_batch_than_open_files(make_dataset, monkeypatch):
    import loffdata.stream.scatter as scatter_module

    monkeypatch.setattr(scatter_module, "_MAX_FILES", 2)  # a batch spans 8 shards
    root, _ = make_dataset(24, 3)
    singles = {int(s["index"]): s["features"] for s in StreamingDataset(root, seed=1)}
    for batch in StreamingDataset(root, seed=1, batch_size=12, shuffle_buffer=24):
        for i, x in zip(batch["index"].tolist(), batch["features"]):
            np.testing.assert_array_equal(x.numpy(), singles[i])


def test_octal_fields_common_layout_and_others():
    from loffdata.stream.layout import octal_fields

    def parse(*fields):
        value, ok = octal_fields(
            np.frombuffer(b"".join(fields), dtype=np.uint8).reshape(len(fields), -1)
        )
        return [int(v) if k else None for v, k in zip(value, ok)]

    assert parse(b"011274\0 ", b"000017\0 ") == [0o11274, 0o17]  # tarfile's checksum layout
    assert parse(b"00000001000\0", b"00000000001\0") == [0o1000, 1]  # tarfile's size layout
    assert parse(b"11274\0\0\0", b"17 \0\0\0\0\0") == [0o11274, 0o17]  # shorter fields
    assert parse(b"011274\0 ", b"0112x4\0 ") == [0o11274, None]  # not octal
    assert parse(b" 11274\0 ", b"\0\0\0\0\0\0\0\0") == [None, None]  # leading space, empty
