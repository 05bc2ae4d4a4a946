"""Hostile shards through ``LoffLoader`` (strict and skip) and ``loffdata verify``.

Each damaged-input case ends in a :class:`~loffdata.errors.LoffError` naming the shard and
the key or byte offset; ``on_error="skip"`` still yields ``len(loader)`` batches; verify
lists the problem and exits 1 without a traceback. Shards are read both without an index
(in sequence) and with one (random access), where each damage keeps the shard's length so
that the index of the intact shard still applies.
"""

from __future__ import annotations

import dataclasses
import subprocess
from collections import Counter

import pytest

from loffdata.errors import LoffError, ManifestError, SampleError, ShardReadError
from loffdata.format.index import shard_index
from loffdata.format.manifest import Manifest
from loffdata.loader import LoffLoader
from loffdata.stream.dataset import StreamingDataset
from tests.craft import archive, features, header, member, sample, write_crafted
from tests.inproc import run_cli
from tests.servers import http_server, s3_server  # noqa: F401

N = 6  # samples k0..k5, labels i % 3, features[0, 0, 0] == i
CLASSES = ["a", "b", "c"]


def crafted(tmp_path, damage=None, *, indexed: bool, name: str = "ds"):
    """A one-shard dataset of N samples, sample 3 replaced by ``damage(3)`` (same length)."""
    parts = [sample(f"k{i}", i, label=i % 3) for i in range(N)]
    intact = archive(*parts)
    if damage is not None:
        parts[3] = damage(3)
    data = archive(*parts)
    assert len(data) == len(intact)
    root = write_crafted(tmp_path / name, {"x.tar": data}, {"x.tar": N}, classes=CLASSES)
    if indexed:
        (tmp_path / "intact.tar").write_bytes(intact)
        offsets, keys = shard_index(str(tmp_path / "intact.tar"))
        m = Manifest.load(str(root))
        m.shards = [dataclasses.replace(m.shards[0], offsets=offsets, keys=keys)]
        m.save(str(root))
    return root


def loader(root, on_error: str = "raise", **kw) -> LoffLoader:
    return LoffLoader(
        str(root), batch_size=2, num_workers=0, augment=None, on_error=on_error, seed=1, **kw
    )


def delivered(ld: LoffLoader) -> list[int]:
    return [int(v) for x, _ in ld for v in x[:, 0, 0, 0].tolist()]


def verify_cli(root) -> subprocess.CompletedProcess:
    """``loffdata verify ROOT --quiet``, in-process (tests/inproc.py; test_cli.py runs the
    command once as a subprocess)."""
    run = run_cli("loffdata", "verify", str(root), "--quiet")
    assert "Traceback" not in run.stderr, run.stderr
    return run


def dup_key(i):
    return sample(f"k{i - 1}", i, label=0)  # same length as k3 (label 3 % 3 == 0)


def size_field(field: bytes):
    return lambda i: (
        member(f"k{i}.feat.msgpack", features(i), size_field=field) + member(f"k{i}.cls", b"0")
    )


def label(text: bytes):
    return lambda i: member(f"k{i}.feat.msgpack", features(i)) + member(f"k{i}.cls", text)


def numeric_field(lo: int, hi: int, value: bytes):
    """Sample ``i`` whose features header has ``value`` in bytes ``[lo, hi)`` (checksum redone)."""

    def damage(i):
        blk = bytearray(member(f"k{i}.feat.msgpack", features(i)))
        blk[lo:hi] = value
        blk[148:156] = b" " * 8
        blk[148:156] = b"%06o\0 " % sum(blk[:512])
        return bytes(blk) + member(f"k{i}.cls", b"0")

    return damage


CASES = {
    "non-octal mtime": (
        numeric_field(136, 148, b"1700000000x\0"),
        ShardReadError,
        "mtime .* is not octal",
        "not octal",
    ),
    "non-octal mode": (
        numeric_field(100, 108, b"0000-644"),
        ShardReadError,
        "mode .* is not octal",
        "not octal",
    ),
    "base-256 uid": (
        numeric_field(108, 116, b"\x80" + bytes(7)),
        ShardReadError,
        "uid is a GNU base-256",
        "base-256",
    ),
    "duplicate key": (
        dup_key,
        ShardReadError,
        "duplicate sample key 'k2'|'k2' goes on past byte",
        "duplicate sample key",
    ),
    "non-octal size": (size_field(b"0000000x012\0"), ShardReadError, "not octal", "not octal"),
    "base-256 size": (
        size_field(b"\x80" + bytes(10) + b"\x40"),
        ShardReadError,
        "base-256",
        "base-256",
    ),
    "8 GiB member": (
        size_field(b"%012o" % (8 << 30)),
        ShardReadError,
        "declares 8589934592 bytes",
        "declares 8589934592",
    ),
    "label beyond int64": (
        label(b"99999999999999999999"),
        SampleError,
        "outside int64",
        "outside int64",
    ),
    "label outside classes": (
        label(b"7"),
        SampleError,
        "outside the 3 classes",
        "label 7 outside the 3 classes",
    ),
}


@pytest.mark.parametrize("indexed", [False, True], ids=["sequential", "indexed"])
@pytest.mark.parametrize("case", list(CASES))
def test_damaged_sample_strict_skip_and_verify(tmp_path, case, indexed):
    damage, error, strict_text, verify_text = CASES[case]
    root = crafted(tmp_path, damage, indexed=indexed)
    with pytest.raises(error, match=strict_text) as err:
        delivered(loader(root))
    assert "x.tar" in str(err.value) and ("byte" in str(err.value) or "'k3'" in str(err.value))
    ld = loader(root, "skip")
    with pytest.warns(RuntimeWarning, match="x.tar"):
        got = delivered(ld)
        batches = sum(1 for _ in ld)
    assert len(got) == N and batches == len(ld) == N // 2
    assert 3 not in got and ld.dataset.skipped["samples"] >= 1
    assert set(got) <= set(range(N))
    if (
        indexed
    ):  # the index confines the damage to the sample (and, for a repeated key, the one it repeats)
        lost = {2, 3} if case == "duplicate key" else {3}
        assert set(got) == set(range(N)) - lost and ld.dataset.skipped["samples"] == 2 * len(
            lost
        )  # two passes
    run = verify_cli(root)
    assert run.returncode == 1 and verify_text in run.stdout and "x.tar" in run.stdout


def _varied(i: int) -> bytes:
    """Samples of different byte sizes, as the format allows (readers ignore unknown suffixes)."""
    extra = [
        member(f"k{i}.unknown", b"?" * (100 * i)),
        member(f"k{i}.txt", b"a caption " * (60 * i)),
        member(f"k{i}.more.msgpack", features(0)),
        b"",
    ][i % 4]
    return sample(f"k{i}", i, label=None if i % 3 == 1 else i % 3) + extra


@pytest.mark.parametrize("indexed", [False, True], ids=["sequential", "indexed"])
def test_samples_of_different_sizes_are_each_delivered_once(tmp_path, indexed):
    n = 24
    data = archive(*[_varied(i) for i in range(n)])
    root = write_crafted(tmp_path / "ds", {"x.tar": data}, {"x.tar": n}, classes=CLASSES)
    if indexed:
        assert run_cli("loffdata", "index", str(root)).returncode == 0
    for shuffle in (False, True):
        got = Counter(delivered(loader(root, shuffle=shuffle)))
        assert got == Counter(range(n))
    batches = list(StreamingDataset(root, batch_size=5, shuffle_buffer=24))
    keys = {i: k for b in batches for i, k in zip(b["index"].tolist(), b["key"])}
    assert keys == {i: f"k{i}" for i in range(n)}
    assert verify_cli(root).returncode == 0


def test_long_name_before_a_symlink_names_only_the_symlink(tmp_path):
    gnu = member("././@LongLink", b"k9" + b"x" * 120 + b".feat.msgpack\0", kind=b"L")
    link = header("k9link", 0, kind=b"2", linkname="elsewhere")
    data = archive(sample("k0", 0), gnu + link, *[sample(f"k{i}", i) for i in range(1, 4)])
    root = write_crafted(tmp_path / "ds", {"x.tar": data}, {"x.tar": 4})
    singles = [s["key"] for s in StreamingDataset(root, shuffle=False)]
    batched = [k for b in StreamingDataset(root, shuffle=False, batch_size=2) for k in b["key"]]
    assert singles == batched == ["k0", "k1", "k2", "k3"]
    assert verify_cli(root).returncode == 0


@pytest.mark.parametrize("indexed", [False, True], ids=["sequential", "indexed"])
def test_prefixed_and_absolute_names_give_one_key_everywhere(tmp_path, indexed):
    parts = [member(f"k{i}.feat.msgpack", features(i), prefix="deep/dir") for i in range(3)]
    parts += [member(f"/abs/k{i}.feat.msgpack", features(i)) for i in range(3, 6)]
    parts += [member(f"./k{i}.feat.msgpack", features(i)) for i in range(6, 8)]
    root = write_crafted(tmp_path / "ds", {"x.tar": archive(*parts)}, {"x.tar": 8})
    if indexed:
        assert run_cli("loffdata", "index", str(root)).returncode == 0
    singles = [s["key"] for s in StreamingDataset(root, shuffle=False)]
    batched = [k for b in StreamingDataset(root, shuffle=False, batch_size=3) for k in b["key"]]
    assert singles == batched == [f"k{i}" for i in range(8)]


def _manifest_case(tmp_path, mutate):
    root = write_crafted(
        tmp_path / "ds", {"a.tar": archive(sample("k0", 0)), "b.tar": archive(sample("k1", 1))}
    )
    text = (root / "manifest.json").read_text()
    (root / "manifest.json").write_text(mutate(text))
    return root


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda t: t.replace('"b.tar"', '"./a.tar"'), "duplicate shard names: 'a.tar'"),
        (
            lambda t: t.replace('"samples": 1,', '"samples": 1000000000000000,', 1).replace(
                '"num_samples": 2', '"num_samples": 1000000000000001'
            ),
            "1000000000000000 samples cannot fit",
        ),
        (
            lambda t: t.replace('"b.tar"', '"%2e%2e/outside/x.tar"'),
            "leaves the dataset's directory",
        ),
    ],
    ids=["duplicate after normalising", "absurd num_samples", "percent-encoded dot-dot"],
)
def test_bad_manifests_fail_at_load_and_verify_lists_them(tmp_path, mutate, message):
    root = _manifest_case(tmp_path, mutate)
    with pytest.raises(ManifestError, match=message):
        loader(root)
    run = verify_cli(root)
    assert run.returncode == 1 and "manifest.json" in run.stdout


def _escaping(root):
    outside = root.parent / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "x.tar").write_bytes(archive(sample("evil", 0)))
    text = (root / "manifest.json").read_text().replace('"b.tar"', '"%2e%2e/outside/x.tar"')
    (root / "manifest.json").write_text(text)


def test_shard_names_stay_inside_the_prefix_over_http(tmp_path, http_server):  # noqa: F811
    root = write_crafted(
        tmp_path / "www" / "ds",
        {"a.tar": archive(sample("k0", 0)), "b.tar": archive(sample("k1", 1))},
    )
    _escaping(root)
    with pytest.raises(ManifestError, match="leaves the dataset's directory"):
        StreamingDataset(f"{http_server.url}/ds")
    assert http_server.gets("x.tar") == [] and {n for _, n, _ in http_server.requests} == {
        "manifest.json"
    }


def test_shard_names_stay_inside_the_prefix_on_s3(tmp_path, s3_server):  # noqa: F811
    root = write_crafted(
        tmp_path / "ds", {"a.tar": archive(sample("k0", 0)), "b.tar": archive(sample("k1", 1))}
    )
    _escaping(root)
    url = s3_server.upload(root, "hostile", "ds")
    with pytest.raises(ManifestError, match="leaves the dataset's directory"):
        StreamingDataset(url, storage_options=s3_server.storage_options)


def test_skip_with_every_sample_broken_fails_clearly(tmp_path):
    root = crafted(tmp_path, None, indexed=False)
    data = (root / "x.tar").read_bytes()
    (root / "x.tar").write_bytes(data[:100])
    with pytest.warns(RuntimeWarning), pytest.raises(LoffError, match="no readable sample"):
        delivered(loader(root, "skip"))
