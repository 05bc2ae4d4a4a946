"""Bounded reading of local files: regular files only, sizes and depths limited.

Every local file loffdata reads (shards, manifests, config files) is opened by
:func:`open_regular`: ``open`` with ``O_NONBLOCK`` (a FIFO cannot hang the open), then
``fstat`` on the descriptor, and anything but a regular file (FIFO, device such as
``/dev/zero`` behind a symlink, socket, directory) is refused with
:class:`NotRegularFileError` before a byte is read. :func:`read_regular` adds a size limit,
:func:`check_inside` refuses a file that resolves outside its dataset's directory (a
symlink to a shard of another dataset), and :func:`loads_json` parses strict JSON (no
``NaN``/``Infinity`` tokens) with a depth limit. Errors never quote the file's bytes.

Bottom layer, beside :mod:`loffdata.util`: standard library and :mod:`loffdata.errors` only.
"""

from __future__ import annotations

import fcntl
import json
import os
import reprlib
import stat
from typing import Any, BinaryIO

from loffdata.errors import LoffError

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_DEPTH",
    "NotRegularFileError",
    "TooLargeError",
    "brief",
    "check_inside",
    "loads_json",
    "fetch_remote",
    "open_binary",
    "open_regular",
    "read_regular",
]

#: Largest config file read (``--config``): 16 MiB.
MAX_CONFIG_BYTES = 16 << 20
#: Deepest nesting accepted in a manifest or config (objects and lists).
MAX_DEPTH = 64
_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a directory",
}
_BRIEF = reprlib.Repr()
_BRIEF.maxlevel, _BRIEF.maxstring, _BRIEF.maxother, _BRIEF.maxlist, _BRIEF.maxdict = 2, 80, 80, 4, 4


class NotRegularFileError(LoffError, OSError):
    """A path that must name a regular file names a FIFO, a device, a socket or a directory."""


class TooLargeError(LoffError, OSError):
    """A file is larger than what may be read of its kind."""


def brief(value: Any) -> str:
    """A short repr of ``value`` for an error message (nested and long values cut)."""
    try:
        return _BRIEF.repr(value)
    except RecursionError:  # pragma: no cover - reprlib's maxlevel keeps it shallow
        return f"<{type(value).__name__}>"


def open_regular(path: str | os.PathLike, *, what: str = "file", buffering: int = -1) -> BinaryIO:
    """Opens a local regular file for binary reading, refusing any other kind of file.

    Raises:
        NotRegularFileError: naming the path and what it is.
        OSError: as ``open`` (missing file, no permission).
    """
    fd = os.open(os.fspath(path), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
            raise NotRegularFileError(
                f"{what} {os.fspath(path)!r} is {kind}, not a regular file; refused"
            )
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb", buffering=buffering)
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike, *, limit: int, what: str = "file") -> bytes:
    """The bytes of a local regular file of at most ``limit`` bytes.

    Raises:
        NotRegularFileError, TooLargeError: naming the path.
    """
    with open_regular(path, what=what) as f:
        size = os.fstat(f.fileno()).st_size
        data = f.read(limit + 1) if size <= limit else b""
    if size > limit or len(data) > limit:
        raise TooLargeError(
            f"{what} {os.fspath(path)!r} is {max(size, len(data))} bytes, more than the "
            f"{limit} a {what} may have"
        )
    return data


def check_inside(path: str, root: str, *, what: str = "shard") -> None:
    """Refuses a local ``path`` that resolves (symlinks followed) outside directory ``root``.

    Raises:
        NotRegularFileError: naming the path and where it points.
    """
    real, base = os.path.realpath(path), os.path.realpath(root)
    if real != base and not real.startswith(base.rstrip("/") + "/"):
        raise NotRegularFileError(
            f"{what} {path!r} resolves outside its dataset's directory {root!r} "
            "(a symlink to another place); refused"
        )


def _refuse_constant(token: str) -> Any:
    raise ValueError(f"the token {token} is not JSON (write null, or a number)")


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of parsed JSON, one level at a time; stops counting past ``limit``."""
    depth, level = 0, [value] if isinstance(value, (dict, list)) else []
    while level and depth <= limit:
        depth += 1
        level = [
            c
            for item in level
            for c in (item.values() if isinstance(item, dict) else item)
            if isinstance(c, (dict, list))
        ]
    return depth


def loads_json(data: bytes | str, *, where: str, max_depth: int = MAX_DEPTH) -> Any:
    """Strict JSON from UTF-8 bytes or text: no ``NaN``/``Infinity``, at most ``max_depth`` deep.

    Raises:
        ValueError: naming ``where`` and what is wrong (not UTF-8, not JSON, too deep);
            callers turn it into their own error class.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(
                f"{where} is not UTF-8 text (byte {err.start}); write it as UTF-8 JSON"
            ) from None
    try:
        value = json.loads(data, parse_constant=_refuse_constant)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{where} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}"
        ) from None
    except RecursionError:
        raise ValueError(f"{where} is nested too deeply (more than {max_depth} levels)") from None
    except ValueError as err:
        raise ValueError(f"{where} is not strict JSON: {err}") from None
    if _depth(value, max_depth) > max_depth:
        raise ValueError(f"{where} is nested too deeply (more than {max_depth} levels)")
    return value


def open_binary(url: str, *, what: str = "file", **storage_options: Any) -> Any:
    """A binary reader of ``url``: :func:`open_regular` for a local path or ``file://`` URL,
    fsspec's opener for anything else (use it in a ``with`` statement)."""
    text = os.fspath(url)
    if "://" not in text or text.startswith("file://"):
        return open_regular(text.removeprefix("file://"), what=what)
    import fsspec

    return fsspec.open(text, "rb", **storage_options)


def fetch_remote(
    urls: list[str], *, limit: int | None = None, **storage_options: Any
) -> list[bytes | Exception]:
    """The bytes of each remote ``url`` (or the error reading it), fetched concurrently, each
    in one GET (no size probe first); at most ``limit + 1`` bytes of each when ``limit`` is
    given, so that a caller can tell an oversized file without downloading all of it."""
    if not urls:
        return []
    from fsspec.core import url_to_fs

    fs, _ = url_to_fs(urls[0], **storage_options)
    paths = [fs._strip_protocol(u) for u in urls]
    start, end = (None, None) if limit is None else (0, limit + 1)
    got = fs.cat_ranges(paths, start, end, on_error="return")
    return [g if end is None or isinstance(g, Exception) else g[:end] for g in got]
