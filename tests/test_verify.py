import json
import subprocess
import sys

import numpy as np
import pytest

from loffdata.format import codec
from loffdata.format.writer import WriterConfig, write_dataset
from loffdata.ops.verify import verify


def test_clean_dataset_verifies(make_dataset):
    root, _ = make_dataset(n=12, shard_size=5, extras=True)
    report = verify(str(root), progress=False)
    assert report.ok and report.samples == 12 and report.shards == 3


def test_corrupted_byte_is_reported_with_shard(make_dataset):
    root, m = make_dataset(n=12, shard_size=5)
    path = root / m.shards[1].name
    data = bytearray(path.read_bytes())
    data[700] ^= 0x01  # inside the first member's payload
    path.write_bytes(bytes(data))
    report = verify(str(root), progress=False)
    assert not report.ok
    assert any(
        "sha256" in p.message and p.shard.endswith(m.shards[1].name) for p in report.problems
    )


def test_truncated_shard_is_reported(make_dataset):
    root, m = make_dataset(n=12, shard_size=5)
    path = root / m.shards[0].name
    path.write_bytes(path.read_bytes()[:3000])
    msgs = [str(p) for p in verify(str(root), progress=False).problems]
    assert any("truncated shard" in s for s in msgs) and any("manifest says 5" in s for s in msgs)


def test_bad_sample_named_by_key(tmp_path):
    def items():
        yield "good", np.zeros((2, 2, 2), np.float32), 0
        yield "wrong", np.zeros((2, 2, 2), np.float32), 5  # label outside 2 classes

    write_dataset(str(tmp_path), items(), config=WriterConfig(dtype=None), classes=["a", "b"])
    problems = verify(str(tmp_path), progress=False).problems
    assert (
        len(problems) == 1
        and problems[0].key == "wrong"
        and "outside the 2 classes" in problems[0].message
    )


def test_wrong_shape_against_manifest(make_dataset):
    root, _ = make_dataset(n=4, shard_size=4)
    d = json.loads((root / "manifest.json").read_text())
    d["features"]["shape"] = [8, 4, 5]
    d["stats"] = None
    (root / "manifest.json").write_text(json.dumps(d))
    problems = verify(str(root), progress=False).problems
    assert len(problems) == 4 and all(
        "manifest says float16[8, 4, 5]" in p.message for p in problems
    )


def test_missing_shard_reported(make_dataset):
    root, m = make_dataset(n=8, shard_size=4)
    (root / m.shards[1].name).unlink()
    problems = verify(str(root), progress=False).problems
    assert problems and "cannot read shard" in problems[0].message


@pytest.mark.slow
def test_cli_inspect_and_verify_exit_codes(make_dataset):
    root, m = make_dataset(n=8, shard_size=4, extras=True)
    run = [sys.executable, "-m", "loffdata.cli"]
    out = subprocess.run(
        [*run, "inspect", str(root)], capture_output=True, text=True, check=True
    ).stdout
    assert "8 in 2 shards" in out and "float16[8, 4, 4]" in out and "pooled" in out
    ok = subprocess.run([*run, "verify", str(root), "--quiet"], capture_output=True, text=True)
    assert ok.returncode == 0 and "OK: 2 shards, 8 samples" in ok.stdout
    path = root / m.shards[0].name
    path.write_bytes(path.read_bytes()[:-2048])
    bad = subprocess.run([*run, "verify", str(root), "--quiet"], capture_output=True, text=True)
    assert bad.returncode == 1 and "PROBLEM" in bad.stdout and m.shards[0].name in bad.stdout


def test_codec_used_by_verify_rejects_nan_free_data_unchanged(make_dataset):
    # verify decodes but never rewrites: the bytes on disk stay as written
    root, m = make_dataset(n=4, shard_size=4)
    before = (root / m.shards[0].name).read_bytes()
    verify(str(root), progress=False)
    assert (root / m.shards[0].name).read_bytes() == before
    assert codec.decode(codec.encode(np.ones(2))).sum() == 2
