"""Hand-made tar shards for hostile-input tests: any header field, any member type.

``tarfile`` refuses to write most of what these tests need (bad numeric fields, a GNU
long name in front of a symlink, a ustar prefix chosen by hand), so headers are built
byte by byte here, and datasets of such shards get a manifest written from their bytes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from loffdata.format import codec
from loffdata.format.manifest import Manifest, ShardInfo, TensorSpec

SHAPE = (4, 2, 2)


def header(
    name: str,
    size: int,
    *,
    kind: bytes = b"0",
    prefix: str = "",
    linkname: str = "",
    size_field: bytes | None = None,
) -> bytes:
    """One ustar header block, checksum included."""
    b = bytearray(512)
    b[0:100] = name.encode()[:100].ljust(100, b"\0")
    b[100:108] = b"0000644\0"
    b[108:116] = b[116:124] = b"0000000\0"
    b[124:136] = size_field if size_field is not None else b"%011o\0" % size
    assert len(b) == 512, "a field was given too many bytes"
    b[136:148] = b"00000000000\0"
    b[156:157] = kind
    b[157:257] = linkname.encode().ljust(100, b"\0")
    b[257:265] = b"ustar\x0000"
    b[345:500] = prefix.encode().ljust(155, b"\0")
    b[148:156] = b" " * 8
    b[148:156] = b"%06o\0 " % sum(b)
    return bytes(b)


def member(name: str, data: bytes, **kw) -> bytes:
    """A member: its header, then its data padded to whole blocks."""
    return header(name, len(data), **kw) + data + bytes(-len(data) % 512)


def archive(*members: bytes) -> bytes:
    return b"".join(members) + bytes(1024)


def features(i: int) -> bytes:
    """A feature payload whose first element is ``i`` (exact in float16 for small ``i``)."""
    x = np.zeros(SHAPE, np.float16)
    x.flat[0] = i
    return codec.encode(x)


def sample(key: str, i: int, *, label: int | None = 0) -> bytes:
    out = member(f"{key}.feat.msgpack", features(i))
    return out + (member(f"{key}.cls", str(label).encode()) if label is not None else b"")


def write_crafted(
    root: Path,
    shards: dict[str, bytes],
    counts: dict[str, int] | None = None,
    classes: list[str] | None = None,
) -> Path:
    """Writes shards (name -> bytes) and a manifest for them (no index); returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    infos = []
    for name, data in shards.items():
        (root / name).write_bytes(data)
        n = (counts or {}).get(name, 1)
        infos.append(ShardInfo(name, n, len(data), hashlib.sha256(data).hexdigest()))
    Manifest(shards=infos, features=TensorSpec(SHAPE, "float16", "CHW"), classes=classes).save(
        str(root)
    )
    return root
