"""loffdata convert: pooled/int8/bf16 from fp16 equal extraction with --pool/--dtype; crop,
extras, re-sharding, exact statistics, verify clean, resume, S3 at both ends, the CLI."""

import warnings

import numpy as np
import pytest
import timm
import torch

from loffdata import cli
from loffdata.errors import LoffError
from loffdata.extract.pipeline import ExtractConfig, RandomWeightsWarning, extract
from loffdata.format.manifest import Manifest
from loffdata.format.stats import ChannelStats
from loffdata.ops.convert import RECORD_DIR, ConvertConfig, convert, convert_features, plan_output
from loffdata.ops.verify import verify
from tests.readback import as_float, read_split
from tests.servers import s3_server  # noqa: F401


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """Extraction of the built-in shapes data with one seeded random test_vit (8x8 grid, 64
    channels): fp16 unpooled, and the pooled variants that extraction itself writes."""
    root = tmp_path_factory.mktemp("extract")
    torch.manual_seed(0)
    ckpt = root / "test_vit.pth"
    torch.save(timm.create_model("test_vit").state_dict(), ckpt)

    def run(name: str, **kw) -> str:
        cfg = ExtractConfig(
            out=str(root / name),
            model="test_vit",
            img_size=128,
            checkpoint=str(ckpt),
            shapes_counts={"train": 12},
            shard_size=5,
            batch_size=6,
            workers=0,
            progress=False,
            **kw,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RandomWeightsWarning)
            extract(cfg)
        return str(root / name / "train")

    return {"fp16": run("fp16", dtype="float16", pooled=True), "root": root, "run": run}


@pytest.mark.parametrize("dtype,tol", [("float16", 2e-3), ("bfloat16", 1e-2), ("int8", None)])
def test_pooled_from_fp16_equals_extraction(extracted, tmp_path, dtype, tol):
    reference = extracted["run"](f"pool2-{dtype}", dtype=dtype, pool=2)
    out = convert(
        extracted["fp16"],
        str(tmp_path / "conv"),
        ConvertConfig(pool=2, dtype=dtype, extras=()),
        progress=False,
    )
    ref_m, ref = read_split(reference)
    got_m, got = read_split(tmp_path / "conv")
    assert got_m.features == ref_m.features == out.features and got_m.features.shape == (64, 4, 4)
    assert [s.key for s in got] == [s.key for s in ref] and [s.label for s in got] == [
        s.label for s in ref
    ]
    assert got_m.classes == ref_m.classes and got_m.source["pool"] == 2 and got_m.extras == {}
    a, b = (
        np.stack([as_float(s.features) for s in got]),
        np.stack([as_float(s.features) for s in ref]),
    )
    if (
        dtype == "int8"
    ):  # the same per-channel quantisation: within one step of the scale (+ fp16 input)
        scale = np.stack([s.features.scale for s in ref])[:, :, None, None]
        assert np.all(np.abs(a - b) <= 1.01 * scale + 2e-3 * np.abs(b))
    else:
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    np.testing.assert_allclose(got_m.stats.mean, ref_m.stats.mean, atol=2e-3)
    np.testing.assert_allclose(got_m.stats.std, ref_m.stats.std, rtol=2e-3)
    assert verify(str(tmp_path / "conv"), progress=False).ok


def test_crop_reshard_extras_and_exact_stats(make_dataset, tmp_path):
    src, _ = make_dataset(23, 5, shape=(8, 6, 6), extras=True)
    cfg = ConvertConfig(crop=(1, 0, 4, 5), pool=2, max_samples=7, dtype="float32")
    m = convert(str(src), str(tmp_path / "out"), cfg, progress=False)
    _, source = read_split(src)
    manifest, got = read_split(tmp_path / "out")
    assert [s.samples for s in manifest.shards] == [7, 7, 7, 2] and manifest.num_samples == 23
    assert manifest.features.shape == (8, 2, 2) and set(manifest.extras) == {"pooled"}
    expect = [
        as_float(s.features)[:, 1:5, 0:5][:, :4, :4].reshape(8, 2, 2, 2, 2).mean(axis=(2, 4))
        for s in source
    ]
    np.testing.assert_allclose(
        np.stack([s.features for s in got]), np.stack(expect), rtol=1e-6, atol=1e-6
    )
    np.testing.assert_array_equal(
        np.stack([s.extras["pooled"] for s in got]), np.stack([s.extras["pooled"] for s in source])
    )
    stats = ChannelStats()
    for s in got:
        stats.update(s.features, channel_axis=0)
    np.testing.assert_allclose(m.stats.mean, stats.mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m.stats.std, stats.std, rtol=1e-12)
    assert m.stats.count == stats.count == 23 * 4
    assert verify(str(tmp_path / "out"), progress=False).ok


def test_max_bytes_and_plan():
    assert plan_output([5, 0, 3], None) == [0, 5, 8]
    assert plan_output([5, 3], 3) == [0, 3, 6, 8]
    x = np.arange(2 * 5 * 5, dtype=np.float32).reshape(2, 5, 5)
    ref = torch.nn.functional.avg_pool2d(torch.from_numpy(x)[None], 2)[0].numpy()  # floor mode
    np.testing.assert_allclose(convert_features(x, pool=2), ref, rtol=1e-6)
    with pytest.raises(ValueError, match="does not fit"):
        convert_features(x, crop=(2, 2, 4, 4))


def test_resume_rewrites_only_missing_shards(make_dataset, tmp_path):
    src, _ = make_dataset(20, 8)
    dst = tmp_path / "out"
    cfg = ConvertConfig(dtype="int8", max_samples=6)
    first = convert(str(src), str(dst), cfg, progress=False)
    kept = {p.name: p.stat().st_mtime_ns for p in dst.glob("*.tar")}
    (dst / "shard-000002.tar").unlink()  # a crash after shard 1: shard 2 and its record lost
    (dst / RECORD_DIR / "shard-000002.json").unlink()
    (dst / ".shard-000002.tar.tmp-deadbeef").write_bytes(b"partial")
    (dst / "manifest.json").unlink()
    again = convert(str(src), str(dst), cfg, progress=False)
    assert again.to_dict() == first.to_dict()  # same bytes (sha256 in the manifest), same stats
    now = {p.name: p.stat().st_mtime_ns for p in dst.glob("*.tar")}
    assert {k for k in now if now[k] != kept.get(k)} == {"shard-000002.tar"}
    assert not list(dst.glob(".*.tmp-*")) and verify(str(dst), progress=False).ok


def test_other_settings_refused_unless_overwrite(make_dataset, tmp_path):
    src, _ = make_dataset(6, 3, extras=True)
    dst = str(tmp_path / "out")
    convert(str(src), dst, ConvertConfig(pool=2), progress=False)
    with pytest.raises(LoffError, match="other settings.*overwrite"):
        convert(str(src), dst, ConvertConfig(pool=4), progress=False)
    assert convert(
        str(src), dst, ConvertConfig(pool=4), overwrite=True, progress=False
    ).features.shape == (8, 1, 1)
    with pytest.raises(ValueError, match=r"extras nope: not in .*\['pooled'\]"):
        convert(str(src), dst, ConvertConfig(extras=("nope",)), progress=False)
    with pytest.raises(ValueError, match="dtype"):
        ConvertConfig(dtype="float8")


def test_s3_to_s3(make_dataset, s3_server, tmp_path):  # noqa: F811
    src, _ = make_dataset(9, 4)
    url = s3_server.upload(src, "loff", "convert-src")
    so = s3_server.storage_options
    m = convert(
        url,
        "s3://loff/convert-dst",
        ConvertConfig(pool=2, dtype="bfloat16"),
        src_options=so,
        dst_options=so,
        progress=False,
    )
    assert m.num_samples == 9 and m.features.dtype == "bfloat16"
    assert verify("s3://loff/convert-dst", progress=False, **so).ok
    again = convert(
        url,
        "s3://loff/convert-dst",
        ConvertConfig(pool=2, dtype="bfloat16"),
        src_options=so,
        dst_options=so,
        progress=False,
    )  # resumes: nothing left to do
    assert again.to_dict() == m.to_dict()


def test_cli(make_dataset, tmp_path, capsys, monkeypatch):
    src, _ = make_dataset(6, 3, extras=True)
    argv = [
        "loffdata",
        "convert",
        str(src),
        str(tmp_path / "out"),
        "--pool",
        "2",
        "--extras",
        "none",
        "--max_samples",
        "4",
        "--quiet",
    ]
    monkeypatch.setattr("sys.argv", argv)
    cli.main()
    assert "wrote 6 samples in 2 shards" in capsys.readouterr().out
    assert Manifest.load(str(tmp_path / "out")).extras == {}


@pytest.mark.slow  # two small extractions: ~30 s here
def test_bench_convert_quick(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "benchmarks/bench_convert.py", "--quick", "--root", str(tmp_path)],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "convert / re-extraction speed" in proc.stdout


def test_corrupt_source_sample_names_shard_and_key_and_leaves_no_partial_shard(
    make_dataset, tmp_path
):
    src, _ = make_dataset(10, 5)
    shard = src / "shard-000001.tar"
    data = bytearray(shard.read_bytes())
    at = [i for i in range(len(data)) if data[i : i + 7] == b"\x83\xa5dtype"][2]  # sample s0000007
    data[at] = 0xC1  # never used in msgpack
    shard.write_bytes(bytes(data))
    dst = tmp_path / "out"
    with pytest.raises(LoffError, match=r"shard-000001\.tar.*s0000007"):
        convert(str(src), str(dst), ConvertConfig(pool=2), progress=False)
    assert sorted(p.name for p in dst.iterdir() if p.is_file()) == [
        "shard-000000.idx",
        "shard-000000.tar",
    ]  # no tmp, no manifest


def _cli(argv: list[str]) -> int:
    """Runs ``loffdata ARGV`` in-process; its exit code (0 when it returns)."""
    try:
        cli.main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


@pytest.mark.parametrize("crop", ["1,1,2,2", "[1,1,2,2]", "1, 1, 2, 2"])
def test_cli_crop_as_documented(make_dataset, tmp_path, capsys, crop):
    src, _ = make_dataset(4, 2)
    assert _cli(["convert", str(src), str(tmp_path / "out"), "--crop", crop, "--quiet"]) == 0
    assert Manifest.load(str(tmp_path / "out")).features.shape == (8, 2, 2)


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--pool", "9"], "--pool 9 is larger than the 4x4 grid"),
        (
            ["--crop", "0,0,2,2", "--pool", "3"],
            "--pool 3 is larger than the 2x2 grid after the crop",
        ),
        (["--crop", "3,3,2,2"], "--crop 3,3,2,2 does not fit the 4x4 grid"),
        (["--crop", "1,2,3"], "--crop: expected list"),
        (["--dtype", "float8"], "--dtype must be None or one of"),
        (["--extras", "pooled,nope"], "--extras nope: not in"),
        (["--extras", ","], "--extras ',': expected comma-separated names"),
        (["--max_samples", "-5"], "--max_samples must be >= 1, got -5"),
        (["--pool", "0"], "--pool must be >= 1"),
    ],
)
def test_cli_refusals_write_nothing(make_dataset, tmp_path, capsys, flags, says):
    src, _ = make_dataset(4, 2, extras=True)
    dst = tmp_path / "out"
    assert _cli(["convert", str(src), str(dst), *flags, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and says in err and "Traceback" not in err, err
    assert not dst.exists()  # no .convert/ state: the corrected command just runs
    assert _cli(["convert", str(src), str(dst), "--pool", "2", "--quiet"]) == 0


def test_cli_overwrite_is_a_switch_and_the_hint_names_it(make_dataset, tmp_path, capsys):
    src, _ = make_dataset(4, 2)
    dst = str(tmp_path / "out")
    assert _cli(["convert", str(src), dst, "--pool", "2", "--quiet"]) == 0
    assert _cli(["convert", str(src), dst, "--pool", "4", "--quiet"]) == 1
    assert "pass --overwrite" in capsys.readouterr().err
    assert _cli(["convert", str(src), dst, "--pool", "4", "--overwrite", "--quiet"]) == 0
    assert Manifest.load(dst).features.shape == (8, 1, 1)


def test_cli_help_documents_every_option(capsys):
    assert _cli(["convert", "--help"]) == 0
    text = capsys.readouterr().out
    assert (
        "(undocumented)" not in text
        and "--crop LIST|NULL" in text
        and "--overwrite [true|false]" in text
    )
    assert _cli(["--help"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.strip().startswith("convert"))
    assert "Derives a dataset from a dataset" in line and "see " not in line
