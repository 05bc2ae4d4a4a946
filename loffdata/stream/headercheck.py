"""Checks of predicted tar headers with numpy, over all samples of one read at once.

:func:`~loffdata.stream.scatter.read_samples` reads samples at offsets a
:class:`~loffdata.stream.scatter.SampleLayout` predicts; these functions tell, per sample,
whether the bytes found are that layout's: valid header checksums, octal fields, sizes,
payload head, exact member names from the index, and a header after the sample that does
not continue its key. A sample that fails any check is read by the general reader.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from loffdata.format.sample import FEATURES_SUFFIX

if TYPE_CHECKING:
    from loffdata.stream.scatter import SampleLayout

__all__ = ["check_samples", "named", "octal_fields"]

_BLOCK = 512
_REGULAR = (ord("0"), 0, ord("7"))
_CHKSUM, _SIZE, _MTIME = slice(148, 156), slice(124, 136), slice(136, 148)


def _padded(n: int) -> int:
    return (n + _BLOCK - 1) // _BLOCK * _BLOCK


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
    """``(sizes, ok)`` of header blocks ``h`` ([n, 512] uint8) that share ``template``'s fixed fields."""
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
