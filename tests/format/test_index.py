"""Shard indexes (written by the writer, computed by ``loffdata index``) and manifest checks."""

from __future__ import annotations

import json

import fsspec
import pytest

from loffdata.errors import ManifestError, ShardReadError
from loffdata.format.index import index_dataset, shard_index
from loffdata.format.manifest import Manifest, check_shard_name
from loffdata.format.shardindex import read_index
from loffdata.format.tar import iter_sample_spans
from loffdata.format.writer import write_sidecar
from tests.craft import archive, member, sample, write_crafted
from tests.inproc import run_cli


def spans(path):
    with open(path, "rb") as f:
        return [(k, s.begin, s.end) for k, _, s in iter_sample_spans(f, shard=str(path))]


def sidecar(root, info):
    return read_index(
        str(root / info.index_file),
        samples=info.samples,
        shard_bytes=info.bytes,
        sha256=info.sha256,
    )


def inline(root):
    """The dataset at ``root`` rewritten with the old inline index (sidecars removed)."""
    d = json.loads((root / "manifest.json").read_text())
    for s, info in zip(d["shards"], Manifest.load(str(root)).shards):
        index = sidecar(root, info)
        s["index"] = {"offsets": index.offsets.tolist(), "keys": list(index.keys)}
        (root / info.index_file).unlink()
    (root / "manifest.json").write_text(json.dumps(d))
    return root


def test_writer_records_each_samples_offset_and_key(make_dataset):
    root, m = make_dataset(n=10, shard_size=4)
    for info in Manifest.load(str(root)).shards:
        found = spans(root / info.name)
        assert info.index_file == info.name.replace(".tar", ".idx") and info.offsets is None
        assert sidecar(root, info).keys == tuple(k for k, _, _ in found)
        assert sidecar(root, info).offsets.tolist() == [*(b for _, b, _ in found), found[-1][2]]


def test_old_readers_see_only_an_additive_field(make_dataset):
    root, _ = make_dataset(n=6, shard_size=3)
    d = json.loads((root / "manifest.json").read_text())
    assert set(d["shards"][0]) == {"name", "samples", "bytes", "sha256", "index"}
    assert d["shards"][0]["index"] == {"file": "shard-000000.idx"}
    for s in d["shards"]:
        del s["index"]
    (root / "manifest.json").write_text(json.dumps(d))
    assert not any(s.indexed for s in Manifest.load(str(root)).shards)  # still a valid manifest


def test_loffdata_index_computes_the_index_of_foreign_shards(tmp_path):
    odd = sample("a", 0) + member("a.txt", b"a caption of some length") + sample("b", 1, label=None)
    data = archive(odd, sample("c", 2), member("c.more.msgpack", b"x" * 700))
    root = write_crafted(tmp_path / "ds", {"x.tar": data}, {"x.tar": 3})
    run = run_cli("loffdata", "index", str(root))
    assert run.returncode == 0 and "indexed: 1 shards, 3 samples" in run.stdout
    info = Manifest.load(str(root)).shards[0]
    index = sidecar(root, info)
    assert (
        index.keys == ("a", "b", "c")
        and tuple(index.offsets.tolist()) == shard_index(str(root / "x.tar"))[0]
    )
    assert index.offsets[1] - index.offsets[0] == 3 * 1024 and index.offsets[-1] == len(data) - 1024


def test_loffdata_index_refuses_duplicate_keys_and_wrong_counts(tmp_path):
    root = write_crafted(
        tmp_path / "dup", {"x.tar": archive(sample("a", 0), sample("a", 1))}, {"x.tar": 2}
    )
    with pytest.raises(ShardReadError, match="duplicate sample key 'a'"):
        index_dataset(str(root))
    run = run_cli("loffdata", "index", str(root))
    assert (
        run.returncode == 1
        and "duplicate sample key" in run.stderr
        and "Traceback" not in run.stderr
    )
    root = write_crafted(
        tmp_path / "count", {"x.tar": archive(sample("a", 0), sample("b", 1))}, {"x.tar": 1}
    )
    with pytest.raises(ManifestError, match="holds 2 samples, manifest says 1"):
        index_dataset(str(root))


def _mutated(make_dataset, mutate):
    root = inline(make_dataset(n=8, shard_size=4)[0])
    d = json.loads((root / "manifest.json").read_text())
    mutate(d)
    (root / "manifest.json").write_text(json.dumps(d))
    return root


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["shards"][0]["index"]["keys"].pop(), "index has 5 offsets and 3 keys"),
        (
            lambda d: d["shards"][0]["index"]["offsets"].__setitem__(1, 700),
            "block-aligned, increasing",
        ),
        (lambda d: d["shards"][0]["index"]["offsets"].__setitem__(4, 10**9), "inside the shard's"),
        (
            lambda d: d["shards"][0]["index"]["keys"].__setitem__(
                1, d["shards"][0]["index"]["keys"][0]
            ),
            "duplicate sample key",
        ),
        (lambda d: d["shards"][0].update(index={"offsets": 3}), "must hold lists"),
        (
            lambda d: d["shards"][0]["index"]["offsets"].__setitem__(0, 10**30),
            "index|OverflowError",
        ),
    ],
)
def test_a_bad_index_is_a_manifest_error(make_dataset, mutate, message):
    with pytest.raises(ManifestError, match=message):
        Manifest.load(str(_mutated(make_dataset, mutate)))


def test_shard_names_are_normalised_and_duplicates_refused(make_dataset):
    root = _mutated(
        make_dataset, lambda d: d["shards"][0].update(name="./" + d["shards"][0]["name"])
    )
    assert Manifest.load(str(root)).shards[0].name == "shard-000000.tar"

    def twice(d):
        d["shards"][1] = {**d["shards"][0], "name": "./" + d["shards"][0]["name"]}

    with pytest.raises(ManifestError, match="duplicate shard names: 'shard-000000.tar'"):
        Manifest.load(str(_mutated(make_dataset, twice)))


@pytest.mark.parametrize("samples", [10**15, 2**40])
def test_absurd_sample_counts_are_manifest_errors_at_load(make_dataset, samples):
    def absurd(d):
        d["shards"][0]["samples"] = samples
        d["shards"][0].pop("index")
        d.pop("num_samples")

    with pytest.raises(ManifestError, match=f"{samples} samples cannot fit in"):
        Manifest.load(str(_mutated(make_dataset, absurd)))


@pytest.mark.parametrize(
    "name",
    [
        "%2e%2e/outside/x.tar",
        "..%2fx.tar",
        "%252e%252e/x.tar",
        "a/../../x.tar",
        "/etc/x.tar",
        "http://evil/x.tar",
        "a\\..\\x.tar",
        "x.tar?y=1",
        "x.tar#f",
        "",
        "a/..",
        ".",
    ],
)
def test_shard_names_that_leave_the_dataset_are_refused(name):
    with pytest.raises(ManifestError):
        check_shard_name(name)


def test_plain_and_nested_shard_names_are_kept():
    assert check_shard_name("./sub/./a.tar") == "sub/a.tar"
    assert check_shard_name("a%20b.tar") == "a%20b.tar"


def test_index_leaves_no_temporaries_and_removes_those_a_killed_run_left(make_dataset):
    root, _ = make_dataset(n=8, shard_size=4)
    left = root / ".shard-000001.idx.tmp-deadbeef"  # what a run killed mid-write leaves
    left.write_bytes(b"partial")
    manifest = index_dataset(str(root), force=True)
    assert not list(root.glob(".*.tmp-*")) and all(sidecar(root, s) for s in manifest.shards)


def test_an_interrupted_sidecar_write_leaves_no_temporary(tmp_path, monkeypatch):
    fs = fsspec.filesystem("file")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fs, "mv", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_sidecar(fs, str(tmp_path / "shard-000000.idx"), b"index bytes")
    assert list(tmp_path.iterdir()) == []
