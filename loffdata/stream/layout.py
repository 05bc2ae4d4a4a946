"""A shard's sample layout: learnt from one sample, checked with numpy over many at once.

:func:`learn_layout` turns a sample read the general way into a :class:`SampleLayout`;
:func:`~loffdata.stream.scatter.read_samples` reads other samples at the offsets it
predicts, and :func:`check_samples` and :func:`named` tell, per sample, whether the bytes
found are that layout's: valid header checksums, octal fields, sizes, payload head, exact
member names from the index, and a header after the sample that does not continue its key.
A sample that fails any check is read by the general reader.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loffdata.format.sample import FEATURES_SUFFIX
from loffdata.format.tar import SplitPayload

__all__ = ["SampleLayout", "check_samples", "learn_layout", "named", "octal_fields"]

_BLOCK = 512
_REGULAR = (ord("0"), 0, ord("7"))
_CHKSUM, _SIZE, _MTIME = slice(148, 156), slice(124, 136), slice(136, 148)


def _padded(n: int) -> int:
    return (n + _BLOCK - 1) // _BLOCK * _BLOCK


# header fields that differ between samples: name, size, mtime, checksum; the rest must match
_VARIABLE = np.zeros(_BLOCK, dtype=bool)
for _lo, _hi in ((0, 100), (124, 156)):
    _VARIABLE[_lo:_hi] = True


def _padded(n: int) -> int:
    return (n + _BLOCK - 1) // _BLOCK * _BLOCK


@dataclass(frozen=True)
class SampleLayout:
    """Where a sample's bytes lie, relative to its first header.

    Attributes:
        suffixes: member suffixes in file order.
        sizes: member sizes (the features' must match exactly; others by padded size).
        headers: offset of each member's header from the sample's start.
        span: bytes from one sample's start to the next's.
        head: the feature payload's head (the bytes before its data).
        data: offset and length of the feature data (what goes into a batch row).
        template: a header block whose fixed fields (all but name, size, mtime and
            checksum) every member header must have.
    """

    suffixes: tuple[str, ...]
    sizes: tuple[int, ...]
    headers: tuple[int, ...]
    span: int
    head: bytes
    data: tuple[int, int]
    template: bytes

    @property
    def scratch(self) -> int:
        """Bytes of a sample that do not go into its batch row."""
        return self.span - self.data[1]

    def scratch_offset(self, offset: int) -> int:
        """Position in a sample's scratch bytes of the byte at ``offset`` in the sample."""
        lo, n = self.data
        return offset if offset < lo else offset - n


def learn_layout(members: dict, span: int, template: bytes) -> SampleLayout | None:
    """The layout of a sample read the general way, or ``None`` if it cannot predict others.

    ``members`` maps suffix -> data in file order, with the features read as a
    :class:`~loffdata.format.tar.SplitPayload`; ``span`` is the bytes the sample took (the
    layout is refused when headers other than one per member, such as long names, were
    involved); ``template`` is its first header block.
    """
    feats = members.get(FEATURES_SUFFIX)
    if not isinstance(feats, SplitPayload) or not feats.tail:
        return None
    suffixes, sizes, headers, pos, data = [], [], [], 0, None
    for suffix, value in members.items():
        size = len(value)
        suffixes.append(suffix)
        sizes.append(size)
        headers.append(pos)
        if suffix == FEATURES_SUFFIX:
            data = (pos + _BLOCK + len(feats.head), len(feats.tail))
        pos += _BLOCK + _padded(size)
    if pos != span or data is None or len(template) != _BLOCK:
        return None
    fixed = np.frombuffer(template, dtype=np.uint8).copy()
    fixed[_VARIABLE] = 0  # only the fixed fields are compared: shards then share one layout
    return SampleLayout(
        tuple(suffixes),
        tuple(sizes),
        tuple(headers),
        span,
        bytes(feats.head),
        data,
        fixed.tobytes(),
    )


def octal_fields(fields: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values of octal header fields (rows of ASCII), and which rows parsed cleanly.

    A clean field is digits followed only by NUL or space bytes (what tar writers emit);
    anything else is left to the general reader. The common layout, all digits but one or
    two terminators (``%06o\\0 ``, ``%011o\\0``), is parsed with a single product.
    """
    width = fields.shape[1]
    for digits in (width - 1, width - 2):
        d = fields[:, :digits]
        rest = fields[:, digits:]
        if ((d >= 48) & (d <= 55)).all() and ((rest == 0) | (rest == 32)).all():
            value = (d.astype(np.int64) - 48) @ (8 ** np.arange(digits - 1, -1, -1, dtype=np.int64))
            return value, np.ones(len(fields), dtype=bool)
    return __octal_fields_general(fields)


def __octal_fields_general(fields: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = fields.astype(np.int64)
    digit = (f >= 48) & (f <= 55)
    count = digit.sum(axis=1)
    width = f.shape[1]
    prefix = np.arange(width)[None, :] < count[:, None]
    rest_ok = np.where(prefix, True, (f == 0) | (f == 32))
    ok = (digit == prefix).all(axis=1) & rest_ok.all(axis=1) & (count > 0)
    power = np.clip(count[:, None] - 1 - np.arange(width)[None, :], 0, None)
    value = np.where(prefix, (f - 48) << (3 * power), 0).sum(axis=1)
    return value, ok


def _check_headers(h: np.ndarray, template: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(sizes, ok)`` of header blocks ``h`` ([n, 512] uint8) that share ``template``'s
    fixed fields."""
    fixed = (h[:, 100:124] == template[100:124]).all(axis=1) & (h[:, 156:] == template[156:]).all(
        axis=1
    )
    stored, ok_sum = octal_fields(h[:, _CHKSUM])
    actual = h.sum(axis=1, dtype=np.int64) - h[:, _CHKSUM].sum(axis=1, dtype=np.int64) + 8 * 32
    sizes, ok_size = octal_fields(h[:, _SIZE])
    _, ok_mtime = octal_fields(h[:, _MTIME])  # mode, uid, gid are fixed: octal like the template's
    return sizes, fixed & ok_sum & ok_size & ok_mtime & (stored == actual)


def check_samples(arr: np.ndarray, layout: SampleLayout) -> tuple[np.ndarray, np.ndarray]:
    """Per sample (rows of ``arr``): whether headers are valid and sizes and payload head
    are the layout's (the block after the sample: zeros or a regular member's header); and
    the member sizes (``[n, members]``)."""
    n, M = len(arr), len(layout.suffixes)
    at = [layout.scratch_offset(h) for h in layout.headers] + [layout.scratch]
    blocks = np.concatenate([arr[:, a : a + _BLOCK] for a in at])  # [(M + 1) * n, 512]
    sizes, valid = _check_headers(blocks, np.frombuffer(layout.template, dtype=np.uint8))
    sizes, valid = sizes.reshape(M + 1, n).T, valid.reshape(M + 1, n).T
    after = arr[:, layout.scratch :]
    ends = ~after.any(axis=1)
    kind = after[:, 156]
    regular = (kind == _REGULAR[0]) | (kind == _REGULAR[1]) | (kind == _REGULAR[2])
    ok = valid[:, :M].all(axis=1) & (ends | (valid[:, M] & regular))
    for m, (suffix, size) in enumerate(zip(layout.suffixes, layout.sizes)):
        if suffix == FEATURES_SUFFIX:
            ok &= sizes[:, m] == size
        else:
            ok &= (sizes[:, m] + _BLOCK - 1) // _BLOCK == _padded(size) // _BLOCK
    head = np.frombuffer(layout.head, dtype=np.uint8)
    ok &= (arr[:, layout.data[0] - len(head) : layout.data[0]] == head).all(axis=1)
    return ok, sizes[:, :M]


def _names(keys: list[str], suffix: str, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``[n, width]`` arrays: each ``key + suffix`` NUL-padded, and where its bytes are."""
    names = [(k + suffix).encode("utf-8")[: width + 1] for k in keys]
    fits = np.array([len(b) <= width for b in names], dtype=bool)
    blob = b"".join(b[:width].ljust(width, b"\0") for b in names)
    return np.frombuffer(blob, dtype=np.uint8).reshape(len(keys), width), fits


def named(arr: np.ndarray, layout: SampleLayout, keys: list[str]) -> np.ndarray:
    """Per sample: whether each member's name field is exactly ``key.suffix`` (the key from
    the index) and the header after the sample does not continue the key."""
    ok = np.ones(len(arr), dtype=bool)
    for h, suffix in zip(layout.headers, layout.suffixes):
        at = layout.scratch_offset(h)
        want, fits = _names(keys, "." + suffix, 100)
        ok &= fits & (arr[:, at : at + 100] == want).all(axis=1)
    prefix, _ = _names(keys, ".", 100)
    mask = prefix != 0
    after = arr[:, layout.scratch : layout.scratch + 100]
    ok &= ~((after == prefix) | ~mask).all(axis=1)
    return ok
