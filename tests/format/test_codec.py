import msgpack
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from loffdata.errors import CodecError
from loffdata.format import codec

DTYPES = [
    "float32",
    "float16",
    "bfloat16",
    "float64",
    "uint8",
    "int8",
    "int16",
    "int32",
    "int64",
    "bool",
]


def _random(dtype: str, shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 50
    return x.astype(codec.DTYPES[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (1,), (768, 16, 16), (3, 7, 7), (2, 0, 5)])
def test_roundtrip_numpy_bitexact(dtype, shape):
    x = _random(dtype, shape)
    y = codec.decode(codec.encode(x))
    assert y.dtype == x.dtype and y.shape == x.shape
    assert x.tobytes() == y.tobytes()


@settings(max_examples=60, deadline=None)
@given(
    dtype=st.sampled_from(DTYPES),
    shape=st.lists(st.integers(0, 6), min_size=0, max_size=4),
    seed=st.integers(0, 2**16),
)
def test_roundtrip_property(dtype, shape, seed):
    x = _random(dtype, tuple(shape), seed)
    assert codec.decode(codec.encode(x)).tobytes() == x.tobytes()


@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.uint8]
)
def test_roundtrip_torch(dtype):
    t = (torch.randn(4, 3, 2) * 10).to(dtype)
    back = codec.to_torch(codec.decode(codec.encode(t)))
    assert back.dtype == dtype and torch.equal(back, t)


def test_decode_is_zero_copy_view():
    payload = codec.encode(np.arange(12, dtype=np.float32))
    arr = codec.decode(payload)
    assert not arr.flags.owndata and not arr.flags.writeable


def test_storage_conversion_to_float16_and_bfloat16():
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    assert codec.decode(codec.encode(x, dtype="float16")).dtype == np.float16
    bf = codec.to_torch(codec.decode(codec.encode(x, dtype="bfloat16")))
    assert bf.dtype == torch.bfloat16
    torch.testing.assert_close(bf.float(), torch.from_numpy(x), rtol=1e-2, atol=1e-2)


def test_int8_per_channel_quantisation_error_is_bounded():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 8, 8)).astype(np.float32) * rng.uniform(
        0.01, 10, (16, 1, 1)
    ).astype(np.float32)
    q = codec.decode(codec.encode(x, dtype="int8"))
    assert isinstance(q, codec.Quantized) and q.values.dtype == np.int8 and q.scale.shape == (16,)
    err = np.abs(q.dequantize() - x).max(axis=(1, 2))
    assert np.all(err <= q.scale / 2 + 1e-6)  # half a quantisation step per channel
    assert len(codec.encode(x, dtype="int8")) < x.nbytes / 2 + 200  # 2x below fp16 = 4x below fp32


def test_quantize_zero_channel():
    q = codec.quantize_int8(np.zeros((2, 3, 3), np.float32))
    assert np.all(q.dequantize() == 0)


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"\xc1garbage", "malformed msgpack"),
        (msgpack.packb([1, 2, 3]), "expected a msgpack map"),
        (msgpack.packb({"dtype": "complex64", "shape": [1], "data": b"12345678"}), "unknown dtype"),
        (msgpack.packb({"dtype": "float32", "shape": [2, 2], "data": b"\0" * 15}), "needs 16"),
        (
            msgpack.packb({"dtype": "float32", "shape": [2**20, 2**20], "data": b""}),
            "exceeds the limit",
        ),
        (msgpack.packb({"dtype": "float32", "shape": [-1], "data": b""}), "non-negative"),
        (msgpack.packb({"dtype": "float32", "shape": [1] * 9, "data": b"\0" * 4}), "at most 8"),
        (msgpack.packb({"dtype": "float32", "shape": [1]}), "no binary 'data'"),
        (
            msgpack.packb(
                {"dtype": "float32", "shape": [2], "data": b"\0" * 8, "scale": b"\0" * 8}
            ),
            "needs int8",
        ),
        (
            msgpack.packb(
                {"dtype": "int8", "shape": [2, 1], "data": b"\0" * 2, "scale": b"\0" * 4}
            ),
            "2 float32",
        ),
    ],
)
def test_malformed_payloads_rejected(payload, message):
    with pytest.raises(CodecError, match=message):
        codec.decode(payload)


def test_truncated_payload_rejected():
    payload = codec.encode(np.ones((4, 4), np.float32))
    with pytest.raises(CodecError):
        codec.decode(payload[:-3])


def test_unsupported_input_dtype():
    with pytest.raises(CodecError, match="unsupported dtype"):
        codec.encode(np.ones(3, dtype=np.complex64))


def test_big_endian_input_is_stored_little_endian():
    x = np.arange(6, dtype=">f4")
    y = codec.decode(codec.encode(x))
    assert y.dtype == np.dtype("<f4") and np.array_equal(x, y)
