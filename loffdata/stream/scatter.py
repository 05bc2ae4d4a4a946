"""Random access into local tar shards: samples at predicted offsets, one ``preadv`` each.

The samples of a shard nearly always share one layout: the same members in the same order,
with the same padded sizes (every sample's features have the same dtype and shape). Once
the first sample has been read the general way (:mod:`loffdata.format.tar`), its
:class:`SampleLayout` predicts where sample ``i`` lies (``begin + i * span``), so any
sample can be read with a single ``os.preadv`` that puts its feature data straight into its
batch row and the rest (headers, payload head, small members, and the header after it)
into a scratch buffer. This lets a worker fill batches in the order it hands them out
instead of a whole shuffle window at a time.

Nothing is trusted: every header is checked (checksum, name, size, type, fixed fields) with
numpy over all samples of a call, every payload head must equal the layout's byte for byte,
and the header after each sample must end the archive or start another key. A sample that
fails any check is read again by the general reader, which reports real problems with its
usual errors.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import numpy as np

from loffdata.format.sample import FEATURES_SUFFIX
from loffdata.format.tar import SplitPayload

__all__ = ["SampleLayout", "learn_layout", "read_samples", "AVAILABLE"]

#: ``os.preadv`` exists on Linux and the BSDs; elsewhere the general reader is used.
AVAILABLE = hasattr(os, "preadv")

_BLOCK = 512
_REGULAR = (ord("0"), 0, ord("7"))
# header fields that differ between samples: name, size, mtime, checksum; the rest must match
_VARIABLE = np.zeros(_BLOCK, dtype=bool)
for _lo, _hi in ((0, 100), (124, 156)):
    _VARIABLE[_lo:_hi] = True
_CHKSUM, _SIZE = slice(148, 156), slice(124, 136)


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
    return SampleLayout(tuple(suffixes), tuple(sizes), tuple(headers), span, bytes(feats.head), data, fixed.tobytes())


def _octal_fields(fields: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
    return _octal_fields_general(fields)


def _octal_fields_general(fields: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
    fixed = (h[:, 100:124] == template[100:124]).all(axis=1) & (h[:, 156:] == template[156:]).all(axis=1)
    stored, ok_sum = _octal_fields(h[:, _CHKSUM])
    actual = h.sum(axis=1, dtype=np.int64) - h[:, _CHKSUM].sum(axis=1, dtype=np.int64) + 8 * 32
    sizes, ok_size = _octal_fields(h[:, _SIZE])
    return sizes, fixed & ok_sum & ok_size & (stored == actual)


def read_samples(layout: SampleLayout, reads: list[tuple[int, int, memoryview]]) -> list[tuple[str, dict] | None]:
    """Reads samples of one layout at predicted offsets, each with one ``preadv``.

    ``reads`` holds ``(fd, offset, row)`` per sample: the file, the byte offset where the
    layout says the sample starts, and the row its feature data goes into (``layout.data[1]``
    bytes). Returns, per sample, ``(key, {suffix: data})`` (features as a
    :class:`~loffdata.format.tar.SplitPayload` over the row, other members as memoryviews of
    a scratch buffer), or ``None`` where the bytes found do not match the layout: a short
    read, a bad header, another head, or a header after the sample that does not start
    another sample (the general reader then reads that one and reports any real problem).
    """
    n, L, pre = len(reads), layout.scratch, layout.data[0]
    per = L + _BLOCK  # a sample's scratch bytes, then the header block after the sample
    scratch = bytearray(n * per)
    view = memoryview(scratch)
    complete = np.zeros(n, dtype=bool)
    want = layout.span + _BLOCK
    for j, (fd, offset, row) in enumerate(reads):
        if len(row) != layout.data[1]:
            raise ValueError(f"row {j} has {len(row)} bytes, the layout's data has {layout.data[1]}")
        base = j * per
        with contextlib.suppress(OSError):  # the general reader meets it again and reports it
            complete[j] = os.preadv(fd, (view[base : base + pre], row, view[base + pre : base + per]), offset) == want
    arr = np.frombuffer(scratch, dtype=np.uint8).reshape(n, per)
    ok, sizes = _check_samples(arr, layout)
    keys, named = _keys(arr, layout)
    ok &= complete & named
    out: list[tuple[str, dict] | None] = [None] * n
    small = [(m, suffix, layout.scratch_offset(h) + _BLOCK) for m, (suffix, h) in enumerate(zip(layout.suffixes, layout.headers)) if suffix != FEATURES_SUFFIX]
    for j in np.flatnonzero(ok).tolist():
        members = {}
        for m, suffix, at in small:
            members[suffix] = view[j * per + at : j * per + at + int(sizes[j, m])]
        members[FEATURES_SUFFIX] = SplitPayload(layout.head, reads[j][2])
        out[j] = (keys[j], {k: members[k] for k in layout.suffixes})
    return out


def _check_samples(arr: np.ndarray, layout: SampleLayout) -> tuple[np.ndarray, np.ndarray]:
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


def _keys(arr: np.ndarray, layout: SampleLayout) -> tuple[list[str | None], np.ndarray]:
    """Per sample: its key, and whether every member is named ``key.suffix`` and the header
    after it (if any) names another key."""
    n = len(arr)
    names = [arr[:, a : a + 100] for a in (layout.scratch_offset(h) for h in layout.headers)]
    after = arr[:, layout.scratch : layout.scratch + 100]
    dot = names[0] == ord(".")
    first = np.where(dot.any(axis=1), dot.argmax(axis=1), 0)
    ok, keys = first > 0, [None] * n
    for k in np.unique(first[ok]).tolist():
        rows = np.flatnonzero(first == k)
        key = names[0][rows, :k]
        good = np.ones(len(rows), dtype=bool)
        for name, suffix in zip(names, layout.suffixes):
            want = np.frombuffer(b"." + suffix.encode() + b"\0", dtype=np.uint8)[: 100 - k]
            good &= (name[rows, :k] == key).all(axis=1) & (name[rows, k : k + len(want)] == want).all(axis=1)
        same = (after[rows, :k] == key).all(axis=1) & (after[rows, k] == ord(".") if k < 100 else True)
        good &= ~same
        ok[rows] = good
        blob = key.tobytes()
        for i, r in enumerate(rows.tolist()):
            keys[r] = blob[i * k : (i + 1) * k].decode("utf-8", "replace")
    return keys, ok
