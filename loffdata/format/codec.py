"""msgpack tensor codec: numpy arrays and torch tensors to bytes and back.

A payload is one msgpack map (format described in ``docs/format.md``)::

    {"dtype": "float16", "shape": [768, 16, 16], "data": <bin, little-endian, C order>}

int8 caches may carry a per-channel float32 ``scale`` (and the channel ``axis``), so that
``value = int8 * scale``. Decoding is a zero-copy ``np.frombuffer`` view on the payload,
after checking the dtype, rank, size and that ``prod(shape) * itemsize == len(data)``.
There is no pickle anywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import ml_dtypes
import msgpack
import numpy as np

from loffdata.errors import CodecError

__all__ = [
    "DTYPES",
    "dtype_name",
    "MAX_RANK",
    "MAX_BYTES",
    "Quantized",
    "quantize_int8",
    "encode",
    "decode",
    "decode_header",
    "as_numpy",
    "to_torch",
    "torch_dtype",
]

#: Logical dtype name -> numpy dtype of the stored bytes (always little-endian).
DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype("<f4"),
    "float16": np.dtype("<f2"),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float64": np.dtype("<f8"),
    "uint8": np.dtype("u1"),
    "int8": np.dtype("i1"),
    "int16": np.dtype("<i2"),
    "int32": np.dtype("<i4"),
    "int64": np.dtype("<i8"),
    "bool": np.dtype("?"),
}
_NAMES = {dt: name for name, dt in DTYPES.items()}


def dtype_name(x: Any) -> str | None:
    """The storage dtype name of an array, a numpy dtype or a :class:`Quantized` (``"int8"``);
    ``None`` for a dtype the format does not store."""
    if isinstance(x, Quantized):
        return "int8"
    dt = np.dtype(getattr(x, "dtype", x))
    return _NAMES.get(dt.newbyteorder("<") if dt.byteorder == ">" else dt)


MAX_RANK = 8
MAX_BYTES = 1 << 31  # 2 GiB per tensor


@dataclass(frozen=True)
class Quantized:
    """An int8 tensor with a symmetric per-channel scale: ``value = values * scale``.

    Attributes:
        values: int8 array.
        scale: float32 array with one entry per index of ``values`` along ``axis``.
        axis: the channel axis (0 for CHW feature maps).
    """

    values: np.ndarray
    scale: np.ndarray
    axis: int = 0

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape)

    def dequantize(self, dtype: Any = np.float32) -> np.ndarray:
        """Returns ``values * scale`` broadcast along ``axis``, as ``dtype``."""
        shape = [1] * self.values.ndim
        shape[self.axis] = -1
        out = self.values.astype(np.float32) * self.scale.reshape(shape)
        return out.astype(dtype, copy=False)


def quantize_int8(x: np.ndarray, *, axis: int = 0) -> Quantized:
    """Symmetric per-channel int8 quantisation (scale = max|x| / 127 per channel).

    Raises:
        CodecError: ``x`` holds NaN or infinity (no scale represents them; see the writer's
            ``nonfinite`` rule in ``docs/format.md``).
    """
    x = np.asarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise CodecError(f"int8 cannot store {_nonfinite(x)}: no channel scale represents them")
    moved = np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)
    amax = np.abs(moved).max(axis=1) if moved.size else np.zeros(x.shape[axis], np.float32)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    bshape = [1] * x.ndim
    bshape[axis] = -1
    values = np.clip(np.rint(x / scale.reshape(bshape)), -127, 127).astype(np.int8)
    return Quantized(values=values, scale=scale, axis=axis)


def _nonfinite(x: np.ndarray) -> str:
    bad = ~np.isfinite(x)
    first = np.unravel_index(int(np.argmax(bad)), x.shape)
    return f"{int(bad.sum())} non-finite values (first at {first})"


def as_numpy(x: Any) -> np.ndarray:
    """Converts a torch tensor or array-like to a numpy array without copying when possible."""
    if isinstance(x, np.ndarray):
        return x
    if type(x).__module__.startswith("torch"):
        return _torch_to_numpy(x)
    return np.asarray(x)


def _torch_to_numpy(t: Any) -> np.ndarray:
    import torch

    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        return t.contiguous().view(torch.int16).numpy().view(DTYPES["bfloat16"])
    return t.numpy()


def encode(x: Any, *, dtype: str | None = None) -> bytes:
    """Encodes an array, tensor or :class:`Quantized` as one msgpack payload.

    Args:
        x: numpy array, torch tensor (any device) or :class:`Quantized`.
        dtype: optional storage dtype to convert to first; ``"int8"`` on a float input
            quantises per channel along axis 0.
    """
    if dtype is not None and not isinstance(x, Quantized):
        x = _convert(as_numpy(x), dtype)
    if isinstance(x, Quantized):
        return _pack(x.values, "int8", scale=x.scale, axis=x.axis)
    arr = as_numpy(x)
    name = dtype_name(arr)
    if name is None:
        raise CodecError(f"unsupported dtype {arr.dtype}; supported: {sorted(DTYPES)}")
    return _pack(arr, name)


def _convert(arr: np.ndarray, dtype: str) -> np.ndarray | Quantized:
    if dtype not in DTYPES:
        raise CodecError(f"unknown storage dtype {dtype!r}; supported: {sorted(DTYPES)}")
    if dtype == "int8" and arr.dtype != DTYPES["int8"]:
        return quantize_int8(arr.astype(np.float32), axis=0)
    return arr.astype(DTYPES[dtype], copy=False)


def _pack(arr: np.ndarray, name: str, *, scale: np.ndarray | None = None, axis: int = 0) -> bytes:
    if arr.ndim > MAX_RANK:
        raise CodecError(f"rank {arr.ndim} exceeds the limit of {MAX_RANK}")
    data = np.ascontiguousarray(arr, dtype=DTYPES[name])
    payload: dict[str, Any] = {
        "dtype": name,
        "shape": list(arr.shape),
        "data": memoryview(data.reshape(-1).view(np.uint8)),
    }
    if scale is not None:
        payload["scale"] = np.ascontiguousarray(scale, dtype="<f4").tobytes()
        payload["axis"] = int(axis)
    return msgpack.packb(payload, use_bin_type=True)


def decode_header(payload: dict[str, Any]) -> tuple[np.dtype, tuple[int, ...]]:
    """Validates a payload map's dtype and shape; returns (numpy dtype, shape)."""
    if not isinstance(payload, dict):
        raise CodecError(f"payload is a {type(payload).__name__}, expected a msgpack map")
    name = payload.get("dtype")
    if name not in DTYPES:
        raise CodecError(f"unknown dtype {name!r}; supported: {sorted(DTYPES)}")
    shape = payload.get("shape")
    if not isinstance(shape, list) or len(shape) > MAX_RANK:
        raise CodecError(f"shape must be a list of at most {MAX_RANK} ints, got {shape!r:.80}")
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise CodecError(f"shape must hold non-negative ints, got {shape!r}")
    # zero-size dimensions do not excuse the others: [0, 2**62] is refused like [1, 2**62]
    nbytes = math.prod(max(d, 1) for d in shape) * DTYPES[name].itemsize
    if nbytes > MAX_BYTES:
        raise CodecError(f"declared size {nbytes} bytes exceeds the limit of {MAX_BYTES}")
    return DTYPES[name], tuple(shape)


def decode(buf: bytes | bytearray | memoryview) -> np.ndarray | Quantized:
    """Decodes a payload into a numpy view of ``buf`` (or :class:`Quantized`).

    The returned array shares memory with ``buf`` (read-only for ``bytes``): the tensor
    bytes are never copied. Payloads in the layout loffdata writes are parsed by a small
    scanner; anything else goes through ``msgpack.unpackb`` and the same checks.

    Raises:
        CodecError: on anything malformed: not msgpack, unknown dtype, bad shape,
            a data length that does not match the shape, a bad scale.
    """
    if hasattr(buf, "head") and hasattr(buf, "tail"):  # a tarstream.SplitPayload
        known = _HEADS.get(buf.head)
        if known is not None and known[0].itemsize * math.prod(known[1]) == len(buf.tail):
            return np.frombuffer(buf.tail, dtype=known[0]).reshape(known[1])
        payload = _scan(memoryview(buf.head), tail=buf.tail)
        _remember_head(buf.head, payload)
        buf = bytes(buf) if payload is None else buf
    else:
        payload = _scan(memoryview(buf))
    if payload is None:
        try:
            payload = msgpack.unpackb(buf, raw=False, strict_map_key=True)
        except Exception as err:  # msgpack raises several unrelated exception types
            raise CodecError(f"malformed msgpack payload ({type(err).__name__}: {err})") from None
    dtype, shape = decode_header(payload)
    data = payload.get("data")
    if not isinstance(data, (bytes, memoryview)):
        raise CodecError("payload has no binary 'data' field")
    expected = math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise CodecError(
            f"data is {len(data)} bytes, shape {list(shape)} of {payload['dtype']} needs {expected}"
        )
    arr = np.frombuffer(data, dtype=dtype).reshape(shape)
    if "scale" not in payload:
        return arr
    return _decode_quantized(arr, payload)


#: Payload heads (everything before the data) already checked -> (dtype, shape). The samples
#: of a dataset share one head, so a split payload's head is parsed once, not per sample.
_HEADS: dict[bytes, tuple[np.dtype, tuple[int, ...]]] = {}


def _remember_head(head: bytes, payload: dict[str, Any] | None) -> None:
    if payload is None or set(payload) != {"dtype", "shape", "data"} or len(_HEADS) >= 64:
        return
    try:
        dtype, shape = decode_header(payload)
    except CodecError:
        return
    if len(payload["data"]) == math.prod(shape) * dtype.itemsize:
        _HEADS[bytes(head)] = (dtype, shape)


_STR = {0xD9: 1, 0xDA: 2, 0xDB: 4}
_BIN = {0xC4: 1, 0xC5: 2, 0xC6: 4}
_UINT = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}
_ARRAY = {0xDC: 2, 0xDD: 4}
_MAX_DEPTH = 2  # a payload map holds a shape list of ints: nothing nests deeper


class _Scanner:
    """Reads the msgpack subset loffdata writes (map of str -> str/uint/array of uint/bin)."""

    def __init__(self, mv: memoryview, tail: memoryview | None = None):
        self.mv, self.pos, self.tail = mv, 0, tail

    def _take(self, n: int) -> memoryview:
        if self.pos + n > len(self.mv):
            raise _Unsupported
        out = self.mv[self.pos : self.pos + n]
        self.pos += n
        return out

    def _length(self, width: int) -> int:
        return int.from_bytes(self._take(width), "big")

    def value(self, depth: int = 0) -> Any:
        if depth > _MAX_DEPTH:
            raise _Unsupported  # deeper than any payload loffdata writes: msgpack's checks decide
        b = self._take(1)[0]
        if b <= 0x7F:
            return b
        if 0xA0 <= b <= 0xBF or b in _STR:
            n = b & 0x1F if b >= 0xA0 else self._length(_STR[b])
            return bytes(self._take(n)).decode("utf-8")
        if b in _BIN:
            n = self._length(_BIN[b])
            if self.tail is not None and self.pos == len(self.mv) and n == len(self.tail):
                tail, self.tail = self.tail, None  # the data was read into the caller's buffer
                return tail
            return self._take(n)
        if b in _UINT:
            return self._length(_UINT[b])
        if 0x90 <= b <= 0x9F or b in _ARRAY:
            n = b & 0x0F if b <= 0x9F else self._length(_ARRAY[b])
            return [self.value(depth + 1) for _ in range(n)]
        raise _Unsupported

    def map(self) -> dict[str, Any]:
        b = self._take(1)[0]
        if not 0x80 <= b <= 0x8F:
            raise _Unsupported
        out = {}
        for _ in range(b & 0x0F):
            key = self.value()
            if not isinstance(key, str):
                raise _Unsupported
            out[key] = self.value()
        if self.pos != len(self.mv) or self.tail is not None:
            raise _Unsupported
        return out


class _Unsupported(Exception):
    pass


def _scan(mv: memoryview, tail: memoryview | None = None) -> dict[str, Any] | None:
    """The payload map with ``data`` as a view of ``mv`` (or ``tail``, the payload's last
    bytes read elsewhere); ``None`` if not in the simple layout."""
    try:
        return _Scanner(mv.cast("B") if mv.format != "B" else mv, tail).map()
    except (_Unsupported, UnicodeDecodeError, TypeError, ValueError):
        return None


def _decode_quantized(arr: np.ndarray, payload: dict[str, Any]) -> Quantized:
    axis = payload.get("axis", 0)
    if payload["dtype"] != "int8" or not isinstance(axis, int) or not 0 <= axis < max(arr.ndim, 1):
        raise CodecError(
            f"a scale needs int8 data and a valid axis, got {payload['dtype']}, axis={axis!r}"
        )
    scale = payload["scale"]
    channels = arr.shape[axis] if arr.ndim else 0
    if not isinstance(scale, (bytes, memoryview)) or len(scale) != 4 * channels:
        raise CodecError(f"scale must be {channels} float32 values")
    return Quantized(values=arr, scale=np.frombuffer(scale, dtype="<f4"), axis=axis)


def torch_dtype(name: str):
    """The torch dtype for a logical dtype name."""
    import torch

    if name not in DTYPES:
        raise CodecError(f"unknown dtype {name!r}")
    return getattr(torch, name)


def to_torch(x: np.ndarray | Quantized, *, dequantize: bool = True):
    """Converts a decoded array to a torch tensor, sharing memory where possible.

    bfloat16 arrays become ``torch.bfloat16`` tensors; :class:`Quantized` values are
    dequantised to float32 unless ``dequantize=False`` (then the int8 values are returned).
    Read-only views are copied, since torch tensors must be writable.
    """
    import torch

    if isinstance(x, Quantized):
        x = x.dequantize() if dequantize else x.values
    if not x.flags.writeable:
        x = x.copy()
    if x.dtype == DTYPES["bfloat16"]:
        return torch.from_numpy(x.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(x)
