"""The cache's files: hashed copies, atomic writes, object versions, abandoned temporaries.

The file-level steps of :class:`~loffdata.storage.cache.ShardCache`: a download is hashed as
it is written, a record is written atomically (temporary, then rename), and a temporary
(``.tmp-<pid>-...``) whose process is gone is recognised so that it can be deleted.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from typing import Any, BinaryIO

__all__ = [
    "TMP",
    "abandoned",
    "copy_hashed",
    "file_sha256",
    "temp_path",
    "version_of",
    "write_atomic",
]

#: the name prefix of a download in progress
TMP = ".tmp-"
_CHUNK = 4 << 20
_IDLE_S = 60.0  # a dead process's temporary is deleted once untouched this long
_STALE_S = 3600.0  # a temporary without a process id is taken as abandoned after this long


def copy_hashed(src: BinaryIO, dst: BinaryIO) -> tuple[str, int]:
    """Copies ``src`` to ``dst`` in chunks; returns the sha256 (hex) and the bytes copied."""
    h, n = hashlib.sha256(), 0
    while chunk := src.read(_CHUNK):
        h.update(chunk)
        dst.write(chunk)
        n += len(chunk)
    return h.hexdigest(), n


def file_sha256(path: str) -> str:
    """The sha256 (hex) of the file at ``path``, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def version_of(src: Any) -> dict[str, Any] | None:
    """The object version a remote reader was pinned to (``storage.pinned.Pin``), if any."""
    pin = getattr(src, "pin", None) or getattr(
        getattr(src, "entry", None), "pin", None
    )  # direct or prefetched
    version = getattr(pin, "version", None)
    if version is None:
        return None
    return {"size": version.size, "etag": version.etag, "modified": version.modified}


def write_atomic(path: str, data: bytes) -> None:
    """Writes ``data`` to a temporary next to ``path``, then renames it into place."""
    tmp = f"{path}.{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def abandoned(path: str, name: str) -> bool:
    """A temporary whose process is gone (or, without a process id, older than an hour)."""
    pid = name[len(TMP) :].split("-", 1)[0]
    try:
        idle = time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return False
    if not pid.isdigit():
        return idle > _STALE_S
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:  # gone; the idle time spares a writer in another PID namespace
        return idle > _IDLE_S
    except PermissionError:
        return False
    return False


def temp_path(path: str) -> str:
    """A download's temporary for the copy at ``path``: same directory, named by process."""
    name = f"{TMP}{os.getpid()}-{uuid.uuid4().hex[:12]}-{os.path.basename(path)}"
    return f"{os.path.dirname(path)}/{name}"
