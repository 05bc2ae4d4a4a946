"""A hypothesis fuzz suite over tar headers and msgpack payloads, on every read path.

Each generated damaged shard must end, on the sequential read, batched random access
(by-sample range requests over HTTP) and ``ds[i]``, local and over loopback HTTP, in
exactly-once delivery (every sample index once) or a :class:`LoffError`
naming the shard (and the key or byte offset): never a bare numpy/Python exception, never
a hang (each example runs under a deadline enforced by ``SIGALRM``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import tempfile
from pathlib import Path

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from loffdata.errors import LoffError
from loffdata.format.index import shard_index
from loffdata.format.manifest import Manifest
from loffdata.storage.retry import RetryConfig
from loffdata.stream.dataset import StreamingDataset
from tests.craft import archive, features, member, write_crafted
from tests.servers import serving

N = 4
CLASSES = ["a", "b", "c"]
RETRY = RetryConfig(backoff=0.01)
DEADLINE_S = 60  # a hang, not slowness: the VM is shared
pytestmark = pytest.mark.slow  # about a minute on a shared 2-core VM
FUZZ = settings(
    max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)


class Hang(Exception):
    pass


@contextlib.contextmanager
def deadline(seconds: int):
    def alarm(signum, frame):
        raise Hang(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def sample(i: int, feat: bytes | None = None) -> bytes:
    return member(f"k{i}.feat.msgpack", features(i) if feat is None else feat) + member(
        f"k{i}.cls", str(i % 3).encode()
    )


_WWW: dict[str, str] = {}  # the served directory and its URL (see the ``served`` fixture)


@pytest.fixture(scope="module", autouse=True)
def served():
    with tempfile.TemporaryDirectory(prefix="fuzz-") as www, serving(Path(www)) as server:
        _WWW.update(root=www, url=server.url)
        yield
        _WWW.clear()


def dataset(data: bytes, *, index_from: bytes | None) -> Path:
    """A one-shard dataset of ``data``; indexed by the offsets of ``index_from`` if given."""
    root = Path(tempfile.mkdtemp(prefix="ds-", dir=_WWW["root"])) / "ds"
    write_crafted(root, {"x.tar": data}, {"x.tar": N}, classes=CLASSES)
    if index_from is not None:
        tmp = root.parent / "intact.tar"
        tmp.write_bytes(index_from)
        offsets, keys = shard_index(str(tmp))
        m = Manifest.load(str(root))
        m.shards = [dataclasses.replace(m.shards[0], offsets=offsets, keys=keys)]
        m.save(str(root))
    return root


def read(path: str, root: Path) -> list[int]:
    path, _, transport = path.partition(" ")
    url = (
        str(root)
        if transport == "local"
        else f"{_WWW['url']}/{root.relative_to(_WWW['root']).as_posix()}"
    )
    if path == "sequential":
        return [int(s["index"]) for s in StreamingDataset(url, shuffle=False, retry=RETRY)]
    if path == "batched":
        return [
            i
            for b in StreamingDataset(url, batch_size=2, shuffle=False, retry=RETRY)
            for i in b["index"].tolist()
        ]
    ds = StreamingDataset(url, retry=RETRY)
    return [int(ds[i]["index"]) for i in range(len(ds))]


def check_outcome(data: bytes, *, index_from: bytes | None) -> None:
    """Every read path: exactly-once delivery, or a LoffError naming the shard."""
    roots = {"sequential": _made(data, None)}
    if index_from is not None:
        roots["batched"] = roots["ds[i]"] = _made(data, index_from)
    for path in [f"{p} {t}" for p in roots for t in ("local", "http")]:
        root = roots[path.split()[0]]
        if root is None:
            continue
        with deadline(DEADLINE_S):
            try:
                got = read(path, root)
            except LoffError as err:
                assert "x.tar" in str(err), (path, err)
                continue
        assert sorted(got) == list(range(N)), (path, got)


def _made(data: bytes, index_from: bytes | None) -> Path | None:
    """The dataset, or ``None`` if its manifest is refused (a LoffError naming the shard)."""
    try:
        return dataset(data, index_from=index_from)
    except LoffError as err:
        assert "x.tar" in str(err), err
        return None


def _intact() -> tuple[bytes, list[int]]:
    parts = [sample(i) for i in range(N)]
    starts = np.cumsum([0] + [len(p) for p in parts]).tolist()
    return archive(*parts), starts


@FUZZ
@given(st.data())
def test_damaged_tar_headers(data):
    intact, starts = _intact()
    header_at = data.draw(
        st.sampled_from([s + h for s in starts[:N] for h in (0, 1024)]), label="header"
    )
    flips = data.draw(
        st.lists(st.tuples(st.integers(0, 511), st.integers(1, 255)), min_size=1, max_size=6),
        label="flips",
    )
    damaged = bytearray(intact)
    for pos, xor in flips:
        damaged[header_at + pos] ^= xor
    if data.draw(st.booleans(), label="fix checksum"):  # reach the checks past the checksum
        blk = damaged[header_at : header_at + 512]
        blk[148:156] = b" " * 8
        damaged[header_at + 148 : header_at + 156] = b"%06o\0 " % sum(blk)
    check_outcome(bytes(damaged), index_from=intact)


@FUZZ
@given(st.integers(1, 6 * 1024), st.booleans())
def test_truncated_shards(cut, indexed):
    intact, _ = _intact()
    check_outcome(intact[: len(intact) - cut], index_from=intact if indexed else None)


_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(),
    st.text(max_size=8),
    st.binary(max_size=16),
)
_DIM = st.one_of(st.just(0), st.integers(0, 4), st.integers(-3, 2**63))
_SHAPE = st.one_of(
    st.lists(_DIM, max_size=10),
    st.recursive(st.integers(0, 4), lambda inner: st.lists(inner, max_size=3), max_leaves=20),
    _SCALAR,
)
_PAYLOAD = st.fixed_dictionaries(
    {
        "dtype": st.one_of(
            st.sampled_from(["float16", "float32", "int8", "bool", "bfloat16", "complex64"]),
            _SCALAR,
        ),
        "shape": _SHAPE,
        "data": st.one_of(st.binary(max_size=64), _SCALAR),
    },
    optional={"scale": st.one_of(st.binary(max_size=32), _SCALAR), "axis": _SCALAR},
)


def _packed(shape, dtype="float16", data=b"") -> bytes:
    return msgpack.packb({"dtype": dtype, "shape": shape, "data": data}, use_bin_type=True)


@settings(FUZZ, max_examples=50)
@given(
    st.one_of(_PAYLOAD.map(lambda p: msgpack.packb(p, use_bin_type=True)), st.binary(max_size=80))
)
@example(_packed([0, 2**62]))
@example(_packed([2**40, 2**40, 0], "int8"))
@example(b"\x83\xa5shape" + b"\x91" * 10**5 + b"\x00" + b"\xa5dtype\xa7float16\xa4data\xc4\x00")
def test_hostile_msgpack_payloads(payload):
    parts = [sample(i, payload if i == 2 else None) for i in range(N)]
    shard = archive(*parts)
    check_outcome(shard, index_from=shard)
