"""Shard names, resolved once the way a transport will resolve them.

A name in a manifest, a list or a listing is percent-decoded (until nothing changes:
``%252e`` -> ``%2e`` -> ``.``), then its dot segments are removed as RFC 3986 (5.2.4)
says, and only then checked: inside the dataset's directory, not a dot-file, not listed
twice. An HTTP client decodes ``%2e`` and drops ``.`` segments before it asks the server,
so ``%2e/a.tar`` *is* ``a.tar`` there; taking every name through :func:`resolve_name`
gives local, HTTP and S3 one answer to "which file is this".
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

from loffdata.errors import LocationError, ManifestError
from loffdata.safeio import brief, check_inside

__all__ = [
    "decode_fully",
    "remove_dot_segments",
    "resolve_name",
    "is_plain_path",
    "is_dot_file",
    "url_identity",
    "first_duplicate",
    "check_prefix",
    "check_destination",
    "check_shard_name",
    "check_local_shards",
]

_MAX_DECODES = 8
#: A name that is already its own resolved form: segments of plain characters, none empty or
#: starting with ``.`` (so no dot segment and no dot-file), no ``%`` (nothing to decode).
_PLAIN_PATH = re.compile(r"[A-Za-z0-9_+=-][A-Za-z0-9_.+=-]*(?:/[A-Za-z0-9_+=-][A-Za-z0-9_.+=-]*)*")


def is_plain_path(name: str) -> bool:
    """Whether ``name`` is a relative path that every check leaves as it is (the fast path of
    :func:`resolve_name` and of shard-name checks: most names of a large dataset)."""
    return _PLAIN_PATH.fullmatch(name) is not None


def decode_fully(text: str) -> str:
    """``text`` percent-decoded until it no longer changes (at most 8 rounds)."""
    for _ in range(_MAX_DECODES):
        decoded = unquote(text)
        if decoded == text:
            return text
        text = decoded
    return text


def remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4: ``a/./b`` -> ``a/b``, ``a/../b`` -> ``b``; a ``..`` above the
    root stays as a leading ``../`` so that callers can refuse it."""
    out: list[str] = []
    climbs = 0
    parts = path.split("/")
    for i, seg in enumerate(parts):
        if seg == ".":
            continue
        if seg == "..":
            if out and out[-1] != "":
                out.pop()
            elif not (out and out[0] == ""):
                climbs += 1
            continue
        if seg == "" and 0 < i < len(parts) - 1:
            continue  # a//b is a/b for every store we read
        out.append(seg)
    return "/".join([".."] * climbs + out)


def resolve_name(name: str) -> str:
    """The path a transport reads for ``name``: decoded, then dot segments removed."""
    if _PLAIN_PATH.fullmatch(name):
        return name
    return remove_dot_segments(decode_fully(name))


def is_dot_file(name: str) -> bool:
    """Whether the file ``name`` (a path or URL, resolved first) names starts with ``.``."""
    base = posixpath.basename(
        resolve_name(urlsplit(name).path if "://" in name else name).rstrip("/")
    )
    return base.startswith(".")


def url_identity(url: str) -> str:
    """What two spellings of one shard URL have in common: scheme, host and resolved path."""
    if "://" not in url or url.startswith("file://"):
        path = url[len("file://") :] if url.startswith("file://") else url
        return "file://" + remove_dot_segments(posixpath.abspath(decode_fully(path)))
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme.lower()}://{host.lower()}:{parts.port or ''}{resolve_name(parts.path)}"


def first_duplicate(names: Iterable[str], identity=resolve_name) -> str | None:
    """The first name whose identity was seen before, or ``None``."""
    names = list(names)
    distinct = identity is resolve_name and len(set(names)) == len(names)
    if distinct and all(map(_PLAIN_PATH.fullmatch, names)):  # each is its own identity
        return None
    seen: set[str] = set()
    for name in names:
        key = identity(name)
        if key in seen:
            return name
        seen.add(key)
    return None


_PLAIN_STEM = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=-]*")


def check_prefix(prefix: str, *, what: str = "prefix") -> str:
    """``prefix`` if it is a plain file stem: no separator, no dot segment, no leading ``.``,
    no percent sign; shards named ``{prefix}-000000.tar`` then stay in their directory.

    Raises:
        LocationError: naming the prefix and what it may hold.
    """
    if (
        not isinstance(prefix, str)
        or not _PLAIN_STEM.fullmatch(prefix)
        or decode_fully(prefix) != prefix
    ):
        raise LocationError(
            f"{what} {prefix!r} is not a plain file stem: use letters, digits and '_.+=-', "
            "no '/' or '\\', not starting with '.'"
        )
    return prefix


def _location(url: str) -> str:
    if "://" not in url or url.startswith("file://"):
        return os.path.realpath(url.removeprefix("file://")).rstrip("/") or "/"
    return url_identity(url.rstrip("/"))


def _inside(child: str, parent: str) -> bool:
    return child == parent or child.startswith(parent.rstrip("/") + "/")


def check_destination(src: str, dst: str, *, both_ways: bool = False) -> None:
    """Refuses an output directory ``dst`` equal to or inside its input ``src`` (and, with
    ``both_ways``, an input inside the output), resolved as the transports will (symlinks,
    dot segments, percent-escapes).

    Raises:
        LocationError: naming both locations.
    """
    s, d = _location(str(src)), _location(str(dst))
    if _inside(d, s):
        raise LocationError(
            f"the output {dst!r} is {'the' if s == d else 'inside the'} input {src!r}: "
            "it would overwrite its own source; choose another output directory"
        )
    if both_ways and _inside(s, d):
        raise LocationError(
            f"the input {src!r} is inside the output {dst!r}, which may be replaced; "
            "choose an output directory outside the input"
        )


_UNSAFE = set("\\?#") | {chr(c) for c in range(32)} | {chr(127)}


def check_shard_name(name: str) -> str:
    """The normalised form of a shard name (``./a.tar`` -> ``a.tar``) if it stays inside the
    dataset's directory once resolved (:func:`resolve_name`:
    percent-decoded, dot segments removed), for local, HTTP and S3 alike.

    Raises:
        ManifestError: for an empty or absolute name, a ``..`` segment (``%2e%2e`` too), a
            URL, a character that a server could read another way (``\\ ? #``, controls), or
            a dot-file (``.a.tar``, ``%2ea.tar``: names starting with ``.`` are never shards).
    """
    if not isinstance(name, str) or not name:
        raise ManifestError(f"shard name {brief(name)} is not a non-empty string")
    if _PLAIN_PATH.fullmatch(name):  # its own normal form: nothing below can object
        return name
    forms = [name, unquote(name), decode_fully(name)]
    for form in forms:
        bad = (
            form.startswith("/") or "://" in form or ".." in form.split("/") or set(form) & _UNSAFE
        )
        if bad:
            raise ManifestError(
                f"shard name {brief(name)} leaves the dataset's directory or is not a plain path"
            )
    normal = posixpath.normpath(name)
    if normal in (".", "") or normal.startswith("../") or resolve_name(name) in ("", "."):
        raise ManifestError(
            f"shard name {brief(name)} does not name a file inside the dataset's directory"
        )
    if is_dot_file(name):
        raise ManifestError(
            f"shard name {brief(name)} is a dot-file (names starting with '.' are never shards)"
        )
    return normal


def check_local_shards(urls: list[str], root: str) -> None:
    """Refuses a local shard that resolves outside ``root`` (a symlink of the file or of a
    folder on the way): each folder is resolved and listed once, not a system call a shard.

    Raises:
        ManifestError: naming the shard and where it points.
    """
    real_root, folders = os.path.realpath(root), {}
    for url in urls:
        folder, name = os.path.split(url)
        if folder not in folders:
            folders[folder] = (os.path.realpath(folder or "."), _symlinks(folder or "."))
        real, links = folders[folder]
        if name in links or real != real_root:
            try:
                check_inside(url, root)
            except OSError as err:
                raise ManifestError(str(err)) from None


def _symlinks(folder: str) -> frozenset[str]:
    try:
        with os.scandir(folder) as entries:
            return frozenset(e.name for e in entries if e.is_symlink())
    except OSError:  # no folder: no shard there either (reading it says so)
        return frozenset()
