import io
import tarfile

import numpy as np
import pytest
import webdataset as wds

from loffdata.errors import CodecError, SampleError, ShardReadError
from loffdata.format import codec
from loffdata.format.sample import check_key, decode_sample, encode_sample, split_member_name
from loffdata.format.tar import iter_members, iter_sample_members


def _tar(members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_encode_sample_members_and_order():
    x = np.zeros((4, 2, 2), np.float32)
    members = encode_sample(
        "abc-1", x, label=7, extras={"pooled": np.ones(4, np.float32)}, dtype="float16"
    )
    assert [n for n, _ in members] == ["abc-1.feat.msgpack", "abc-1.cls", "abc-1.pooled.msgpack"]
    assert members[1][1] == b"7"
    assert codec.decode(members[0][1]).dtype == np.float16


@pytest.mark.parametrize("key", ["", "a.b", "a/b", "x" * 81, "ü"])
def test_invalid_keys(key):
    with pytest.raises(ValueError, match="invalid sample key"):
        check_key(key)


def test_invalid_extra_name():
    with pytest.raises(ValueError, match="extra tensor name"):
        encode_sample("k", np.zeros(1), extras={"feat": np.zeros(1)})


def test_split_member_name():
    assert split_member_name("dir/k1.feat.msgpack") == ("k1", "feat.msgpack")
    assert split_member_name("k1") == ("k1", "")


def test_decode_sample_roundtrip():
    x = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    members = dict(
        (split_member_name(n)[1], d)
        for n, d in encode_sample("k", x, label=3, extras={"lg": np.ones(5)})
    )
    s = decode_sample("k", members, shard="s.tar")
    assert (
        s.label == 3
        and np.array_equal(s.features, x)
        and np.array_equal(s.extras["lg"], np.ones(5))
    )


def test_decode_sample_errors_name_shard_and_key():
    with pytest.raises(SampleError, match="no 'feat.msgpack'") as e:
        decode_sample("k9", {"cls": b"1"}, shard="mem://a.tar")
    assert e.value.shard == "mem://a.tar" and e.value.key == "k9"
    with pytest.raises(SampleError, match=r"not an ASCII integer.*k9"):
        decode_sample("k9", {"feat.msgpack": codec.encode(np.zeros(1)), "cls": b"x"}, shard="a.tar")
    with pytest.raises(SampleError, match=r"cannot decode member 'feat.msgpack'.*'a.tar'.*'k9'"):
        decode_sample("k9", {"feat.msgpack": b"\x93\x01"}, shard="a.tar")


def test_sample_error_survives_pickling():
    import pickle

    err = pickle.loads(pickle.dumps(SampleError("bad", shard="u", key="k")))
    assert err.shard == "u" and err.key == "k" and "bad" in str(err)


def test_tarstream_groups_members_into_samples():
    members = [
        m for i in range(3) for m in encode_sample(f"k{i}", np.full((1,), i, np.float32), label=i)
    ]
    out = list(iter_sample_members(io.BytesIO(_tar(members)), shard="t"))
    assert [k for k, _ in out] == ["k0", "k1", "k2"]
    assert sorted(out[1][1]) == ["cls", "feat.msgpack"]


def test_tarstream_reads_pax_long_names():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        name = "d" * 120 + "/k.cls"
        info = tarfile.TarInfo(name)
        info.size = 1
        tar.addfile(info, io.BytesIO(b"5"))
    assert list(iter_members(io.BytesIO(buf.getvalue()), shard="t")) == [(name, b"5")]


@pytest.mark.parametrize("cut", [100, 512, 700, -1024 * 10 + 100])
def test_tarstream_detects_truncation(cut):
    data = _tar(encode_sample("k0", np.zeros((8, 8), np.float32), label=1))
    with pytest.raises(ShardReadError, match="truncated shard 't.tar'"):
        list(iter_members(io.BytesIO(data[:cut]), shard="t.tar"))


def test_tarstream_detects_corrupt_header():
    data = bytearray(_tar(encode_sample("k0", np.zeros(4, np.float32))))
    data[5] ^= 0xFF
    with pytest.raises(ShardReadError, match="bad checksum"):
        list(iter_members(io.BytesIO(bytes(data)), shard="t.tar"))


def test_stock_webdataset_reads_written_shards(make_dataset):
    root, manifest = make_dataset(n=10, shard_size=4, extras=True)
    urls = [str(root / s.name) for s in manifest.shards]
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    assert len(samples) == 10
    first = codec.decode(samples[0]["feat.msgpack"])
    assert first.shape == (8, 4, 4) and first[0, 0, 0] == 0
    assert int(samples[3]["cls"]) == 0 and "pooled.msgpack" in samples[3]


def test_tarstream_reads_members_into_given_buffers():
    arena = bytearray(1 << 16)
    offset = [0]

    def alloc(n):
        view = memoryview(arena)[offset[0] : offset[0] + n]
        offset[0] += n
        return view

    x = np.arange(64, dtype=np.float32).reshape(4, 4, 4)
    data = _tar(encode_sample("k0", x, label=2))
    members = dict(iter_members(io.BytesIO(data), shard="t", alloc=alloc))
    feat = members["k0.feat.msgpack"]
    assert isinstance(feat, memoryview) and feat.obj is arena
    decoded = codec.decode(feat)
    assert np.array_equal(decoded, x) and np.shares_memory(decoded, np.frombuffer(arena, np.uint8))
    assert bytes(members["k0.cls"]) == b"2"
    with pytest.raises(ShardReadError, match="truncated"):
        list(iter_members(io.BytesIO(data[:1000]), shard="t", alloc=alloc))


def test_fast_decoder_and_msgpack_agree_on_foreign_layouts():
    import msgpack

    x = np.arange(6, dtype=np.float32)
    foreign = msgpack.packb({"shape": [6], "data": x.tobytes(), "dtype": "float32", "note": None})
    assert np.array_equal(codec.decode(foreign), x)  # unknown value type: msgpack fallback
    big = msgpack.packb({"dtype": "float32", "shape": [6], "data": x.tobytes()}, use_bin_type=False)
    with pytest.raises(CodecError):
        codec.decode(big)  # data as str type (old msgpack): rejected either way
