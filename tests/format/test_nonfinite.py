"""Non-finite features: refused at write and convert unless ``nonfinite="zero"``; verify
reports them; no NaN reaches a channel's scale, the statistics or the manifest."""

from __future__ import annotations

import json

import numpy as np
import pytest

from loffdata.errors import CodecError, LoffError, SampleError
from loffdata.format import codec
from loffdata.format.manifest import Manifest
from loffdata.format.writer import ShardWriter, WriterConfig
from loffdata.ops.convert import ConvertConfig, convert
from loffdata.ops.verify import verify
from tests.craft import archive, member, write_crafted


def _bad(value: float) -> np.ndarray:
    x = np.full((3, 2, 2), 2.0, np.float32)
    x[1] = [[0.5, -1.0], [0.25, 0.0]]
    x[1, 0, 0] = value
    return x


def _strict_json(path) -> dict:
    def refuse(token):
        raise AssertionError(f"non-JSON token {token} in the manifest")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", ["int8", "float16", "float32"])
def test_writer_refuses_non_finite_features_naming_the_sample(tmp_path, dtype, value):
    w = ShardWriter(str(tmp_path / "ds"), WriterConfig(dtype=dtype))
    w.write("ok", _bad(1.0))
    with pytest.raises(SampleError, match="non-finite") as err:
        w.write("bad", _bad(value))
    assert err.value.key == "bad" and err.value.shard.endswith("shard-000000.tar")


def test_beyond_float16_is_non_finite_too(tmp_path):
    w = ShardWriter(str(tmp_path / "ds"), WriterConfig(dtype="float16"))
    with pytest.raises(SampleError, match="beyond the storage dtype's range"):
        w.write("big", _bad(1e6))


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_zero_rule_keeps_the_channel_scale_and_a_strict_json_manifest(tmp_path, value):
    root = tmp_path / "ds"
    with ShardWriter(str(root), WriterConfig(dtype="int8", nonfinite="zero")) as w:
        w.write("bad", _bad(value))
    assert w.zeroed == 1
    w.manifest().save(str(root))
    m = _strict_json(root / "manifest.json")
    assert all(np.isfinite(m["stats"]["mean"]))
    from loffdata.stream.dataset import StreamingDataset

    (sample,) = list(StreamingDataset(str(root)))
    q = sample["features"]
    assert isinstance(q, codec.Quantized)
    assert q.scale[1] == pytest.approx(1.0 / 127)  # max |finite| of channel 1, not collapsed to 1.0
    np.testing.assert_allclose(q.dequantize()[1], [[0.0, -1.0], [0.25, 0.0]], atol=1 / 127)


def test_codec_int8_refuses_non_finite():
    with pytest.raises(CodecError, match="non-finite"):
        codec.encode(_bad(np.nan), dtype="int8")


def _float32_with_nan(root):
    parts = [
        member(f"k{i}.feat.msgpack", codec.encode(_bad(np.nan if i == 1 else 1.0)))
        for i in range(3)
    ]
    write_crafted(root, {"x.tar": archive(*parts)}, {"x.tar": 3})
    m = Manifest.load(str(root))
    m.features = type(m.features)((3, 2, 2), "float32", "CHW")
    m.save(str(root))
    return root


def test_convert_refuses_non_finite_unless_zero(tmp_path):
    src = _float32_with_nan(tmp_path / "src")
    with pytest.raises(LoffError, match="non-finite") as err:
        convert(str(src), str(tmp_path / "dst"), ConvertConfig(dtype="int8"), progress=False)
    assert "'k1'" in str(err.value)
    m = convert(
        str(src),
        str(tmp_path / "dst0"),
        ConvertConfig(dtype="int8", nonfinite="zero"),
        progress=False,
    )
    assert m.stats is not None and np.isfinite(m.stats.mean).all()
    _strict_json(tmp_path / "dst0" / "manifest.json")
    assert verify(str(tmp_path / "dst0"), progress=False).ok


def test_verify_reports_non_finite_features(tmp_path):
    src = _float32_with_nan(tmp_path / "src")
    report = verify(str(src), progress=False)
    assert [(p.key, p.message) for p in report.problems] == [
        ("k1", "features hold 1 non-finite values (NaN or infinity)")
    ]
