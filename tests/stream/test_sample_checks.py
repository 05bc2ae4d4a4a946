"""One sample check for every read path (``loffdata/stream/checks.py``).

Each hostile sample is refused the same way by the sequential read, batched random access
(local ``preadv``; by-sample range requests over HTTP), ``ds[i]``, a union mix's ``ds[i]``
and the mix's stream: a :class:`SampleError` naming the shard and the key, with one message
for all paths; ``on_error="skip"`` leaves exactly that sample out. Local and loopback HTTP.
"""

from __future__ import annotations

import dataclasses

import msgpack
import numpy as np
import pytest

from loffdata.errors import LoffError, SampleError, ShardReadError
from loffdata.format import codec
from loffdata.format.index import shard_index
from loffdata.format.manifest import Manifest, TensorSpec
from loffdata.stream.checks import IndexTypeError
from loffdata.stream.dataset import StreamingDataset
from loffdata.stream.mix import Mix, MixedDataset
from tests.craft import archive, features, member, write_crafted
from tests.servers import serving

N = 6  # samples k0..k5 with features[0, 0, 0] == i; sample 3 is the hostile one
CLASSES = ["a", "b", "c"]
POOLED = (4,)


def _payload(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _deep(depth: int) -> bytes:
    head = _payload({"dtype": "float16", "data": b""})  # a map of 2; the shape goes in front
    return b"\x83\xa5shape" + b"\x91" * depth + b"\x00" + head[1:]


def good(
    i: int,
    *,
    label: bytes | None = None,
    pooled=POOLED,
    feat: bytes | None = None,
    key: str | None = None,
    **more,
) -> bytes:
    lab, k = str(i % 3).encode() if label is None else label, f"k{i}" if key is None else key
    return (
        member(f"{k}.feat.msgpack", features(i) if feat is None else feat)
        + member(f"{k}.cls", lab)
        + member(f"{k}.pooled.msgpack", codec.encode(np.full(pooled, i, np.float32)))
        + b"".join(member(f"{k}.{name}.msgpack", codec.encode(x)) for name, x in more.items())
    )


def teacher(index=None, k: int = 2) -> dict:
    out = {"logits": np.zeros((1, k), np.float16)}
    return out if index is None else {**out, "logits_index": np.array([index], np.int16)}


CASES = {  # name -> (sample 3, the message every path gives[, the key named])
    "key with a space": (good(3, key="k 3"), "invalid sample key 'k 3'", "k 3"),
    "non-ASCII key": (good(3, key="k\u00e93"), "invalid sample key 'k\u00e93'", "k\u00e93"),
    "label outside classes": (good(3, label=b"7"), "label 7 outside the 3 classes"),
    "label int64 max": (
        good(3, label=b"9223372036854775807"),
        "label 9223372036854775807 outside the 3 classes",
    ),
    "stored label -1": (good(3, label=b"-1"), "label -1 outside the 3 classes"),
    "extra of the wrong shape": (
        good(3, pooled=(5,)),
        "extra 'pooled' is float32[5], manifest says float32[4]",
    ),
    "teacher index outside classes": (
        good(3, **teacher([0, 7])),
        "logits_index holds class 7, outside [0, 3)",
    ),
    "teacher index negative": (
        good(3, **teacher([-2, 1])),
        "logits_index holds class -2, outside [0, 3)",
    ),
    "teacher logits of another K": (
        good(3, **teacher(k=5)),
        "teacher logits have [5] classes, the dataset 3",
    ),
    "shape [0, 2**62]": (
        good(3, feat=_payload({"dtype": "float16", "shape": [0, 1 << 62], "data": b""})),
        "cannot decode member 'feat.msgpack': declared size",
    ),
    "shape nested 10**5 deep": (
        good(3, feat=_deep(10**5)),
        "cannot decode member 'feat.msgpack': malformed msgpack",
    ),
}


def _dataset(root, bad: bytes, *, indexed: bool):
    data = archive(*[bad if i == 3 else good(i) for i in range(N)])
    write_crafted(root, {"x.tar": data}, {"x.tar": N}, classes=CLASSES)
    m = Manifest.load(str(root))
    m.extras = {"pooled": TensorSpec(POOLED, "float32")}
    if indexed:
        offsets, keys = shard_index(str(root / "x.tar"))
        m.shards = [dataclasses.replace(m.shards[0], offsets=offsets, keys=keys)]
    m.save(str(root))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Every case's dataset (with and without index, and a second mix source), local and served."""
    www = tmp_path_factory.mktemp("www")
    for n, (bad, *_) in enumerate(CASES.values()):
        for indexed in (False, True):
            _dataset(www / f"c{n}-{int(indexed)}", bad, indexed=indexed)
    data = archive(*[good(i) for i in range(N)])
    write_crafted(www / "other", {"y.tar": data}, {"y.tar": N}, classes=["c", "d", "e"])
    m = Manifest.load(str(www / "other"))
    m.extras = {"pooled": TensorSpec(POOLED, "float32")}
    m.save(str(www / "other"))
    with serving(www) as server:
        yield www, server.url


def _url(served, transport: str, case: str, indexed: bool) -> tuple[str, str]:
    www, http = served
    base = str(www) if transport == "local" else http
    return f"{base}/c{list(CASES).index(case)}-{int(indexed)}", f"{base}/other"


def _mix(url: str, other: str, **kw) -> MixedDataset:
    return MixedDataset(Mix([url, other], classes="union"), shuffle=False, **kw)


def read(path: str, url: str, other: str, on_error: str = "raise") -> list[int]:
    """The feature markers (sample numbers) one read path delivers, in order."""
    if path == "sequential":
        return [
            int(s["features"][0, 0, 0])
            for s in StreamingDataset(url, shuffle=False, on_error=on_error)
        ]
    if path == "batched":
        ds = StreamingDataset(url, batch_size=2, shuffle=False, on_error=on_error)
        return [int(v) for b in ds for v in b["features"][:, 0, 0, 0].tolist()]
    ds = StreamingDataset(url) if path == "ds[i]" else _mix(url, other)
    if path == "mix stream":
        ds = _mix(url, other, batch_size=2, on_error=on_error)
        return [
            int(v)
            for b in ds
            for v, i in zip(b["features"][:, 0, 0, 0].tolist(), b["index"].tolist())
            if i < N
        ]
    return [int(ds[i]["features"][0, 0, 0]) for i in range(N)]


PATHS = ["sequential", "batched", "ds[i]", "mix ds[i]", "mix stream"]


@pytest.mark.parametrize("transport", ["local", "http"])
@pytest.mark.parametrize("case", list(CASES))
def test_every_read_path_refuses_the_sample_alike(served, case, transport):
    said = {}
    for path in PATHS:
        url, other = _url(served, transport, case, indexed=path != "sequential")
        with pytest.raises(SampleError) as err:
            read(path, url, other)
        assert err.value.key == (CASES[case][2:] or ["k3"])[0] and err.value.shard.endswith(
            "x.tar"
        ), (path, err.value)
        said[path] = str(err.value).split(" (shard=")[0]
    assert len(set(said.values())) == 1, said
    assert next(iter(said.values())).startswith(CASES[case][1])


@pytest.mark.parametrize("transport", ["local", "http"])
@pytest.mark.parametrize("path", ["sequential", "batched", "mix stream"])
def test_skip_leaves_out_exactly_the_sample(served, path, transport):
    url, other = _url(served, transport, "stored label -1", indexed=path != "sequential")
    with pytest.warns(RuntimeWarning, match="x.tar"):
        got = read(path, url, other, on_error="skip")
    assert 3 not in got and set(got) == set(range(N)) - {3}


def test_a_good_mix_unifies_labels_alike_in_ds_i_and_the_stream(served):
    www, _ = served
    mix = _mix(f"{www}/other", f"{www}/other")
    streamed = {int(s["index"]): int(s["label"]) for s in mix}
    assert {i: mix[i]["label"] for i in range(2 * N)} == streamed
    assert sorted(set(streamed.values())) == [0, 1, 2]  # "c", "d", "e": the union's first three


@pytest.mark.parametrize("bad", [4.7, "3", True, np.bool_(True), 3.0, None])
def test_ds_i_takes_integers_only(served, bad):
    url, _ = _url(served, "local", "label outside classes", indexed=True)
    ds = StreamingDataset(url)
    with pytest.raises(IndexTypeError, match="must be an integer"):
        ds[bad]
    assert ds[np.int64(-1)]["key"] == "k5" and ds[np.int32(1)]["key"] == "k1"
    with pytest.raises(IndexError):
        ds[N]


def test_ds_i_refuses_an_index_that_ends_a_sample_early(tmp_path):
    root = tmp_path / "ds"
    _dataset(root, good(3), indexed=True)
    m = Manifest.load(str(root))
    offsets = list(m.shards[0].offsets)
    offsets[4] -= 1024  # sample 3 "ends" before its label and extra: they would be dropped
    m.shards = [dataclasses.replace(m.shards[0], offsets=tuple(offsets))]
    m.save(str(root))
    ds = StreamingDataset(str(root))
    with pytest.raises(ShardReadError, match=rf"'k3' goes on past byte {offsets[4]}"):
        ds[3]


def test_ds_i_names_the_true_byte_offset(tmp_path):
    root = tmp_path / "ds"
    _dataset(root, good(3), indexed=True)
    m = Manifest.load(str(root))
    at = m.shards[0].offsets[3] + 512 * 2  # the second header of sample 3: k3.cls
    data = bytearray((root / "x.tar").read_bytes())
    data[at + 148 : at + 156] = b"garbage!"  # its checksum field
    (root / "x.tar").write_bytes(bytes(data))
    with pytest.raises(ShardReadError, match=rf"byte {at} of shard"):
        StreamingDataset(str(root))[3]


def test_ds_i_never_mixes_two_object_versions(tmp_path):
    www = tmp_path / "www"
    _dataset(www / "ds", good(3), indexed=True)
    replaced = tmp_path / "new.tar"
    replaced.write_bytes(archive(*[good(i + 10) for i in range(N)]))  # same size, other contents
    assert replaced.stat().st_size == (www / "ds" / "x.tar").stat().st_size
    with serving(www) as server:
        ds = StreamingDataset(f"{server.url}/ds")
        assert int(ds[0]["features"][0, 0, 0]) == 0
        server.faults.replace["x.tar"] = (len(server.gets("x.tar")) + 1, str(replaced))
        with pytest.raises(LoffError, match="changed"):
            ds[1]


def test_an_empty_key_is_refused_by_the_stream_and_verify(tmp_path):
    from loffdata.ops.verify import verify

    root = tmp_path / "ds"
    _dataset(
        root, good(3, key=""), indexed=False
    )  # an index cannot even name it (the manifest refuses)
    with pytest.raises(SampleError, match="invalid sample key ''"):
        list(StreamingDataset(str(root), shuffle=False))
    assert [p.message for p in verify(str(root), progress=False).problems] == [
        "invalid sample key '': use 1-80 of [A-Za-z0-9_-]"
    ]
