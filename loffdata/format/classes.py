"""Class names of a dataset whose labels are integers: given, read from a file, or the labels.

Shards from another writer (webdataset ``cls`` members, GNU tar) and integer-label image
inputs carry numbers, not names. :func:`class_names` turns what the user gives into the
manifest's ``classes`` (label ``i`` is ``classes[i]``):

- a list of names, or one string of comma-separated names (``"cat,dog"``);
- a file: JSON (a list, or a mapping ``{"0": "cat", "1": "dog"}`` / ``{"cat": 0, "dog": 1}``)
  or plain text, one name per line (line ``i`` is label ``i``);
- nothing: the label values themselves (``"0"`` ... ``"K-1"`` for labels in ``[0, K)``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from loffdata.errors import ManifestError

__all__ = ["class_names", "read_class_names"]

_MAX_FILE = 64 << 20


def read_class_names(given: Any) -> list[str] | None:
    """The names ``given`` (list, comma-separated string or file path), without the labels'
    check."""
    if given is None:
        return None
    if isinstance(given, (list, tuple)):
        return [str(x) for x in given]
    text = os.fspath(given)
    if os.path.isfile(text):
        return _from_file(text)
    if "," in text or not os.path.splitext(text)[1]:
        return [x.strip() for x in text.split(",") if x.strip()]
    raise ManifestError(
        f"classes {text!r}: no such file (give a file, or names separated by commas)"
    )


def _from_file(path: str) -> list[str]:
    if os.path.getsize(path) > _MAX_FILE:
        raise ManifestError(f"classes file {path!r} is larger than {_MAX_FILE >> 20} MiB")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return [line.strip() for line in text.splitlines() if line.strip()]
    if isinstance(data, list):
        return [str(x) for x in data]
    if isinstance(data, Mapping):
        return _from_mapping(data, path)
    raise ManifestError(
        f"classes file {path!r}: expected a JSON list or mapping, got {type(data).__name__}"
    )


def _from_mapping(data: Mapping[str, Any], path: str) -> list[str]:
    """``{"0": "cat"}`` (label -> name) or ``{"cat": 0}`` (name -> label), dense from 0."""
    pairs: dict[int, str] = {}
    for k, v in data.items():
        label, name = (k, v) if str(k).lstrip("-").isdigit() else (v, k)
        if not str(label).lstrip("-").isdigit():
            raise ManifestError(f"classes file {path!r}: entry {k!r}: {v!r} maps no integer label")
        pairs[int(label)] = str(name)
    if sorted(pairs) != list(range(len(pairs))):
        raise ManifestError(
            f"classes file {path!r}: labels must be 0..{len(pairs) - 1}, got {sorted(pairs)[:10]}"
        )
    return [pairs[i] for i in range(len(pairs))]


def class_names(given: Any, labels: Iterable[int]) -> list[str] | None:
    """The manifest's ``classes`` for a dataset whose integer labels are ``labels``.

    Raises:
        ManifestError: a label outside the names given, or a negative label.
    """
    seen = sorted(set(int(x) for x in labels))
    names = read_class_names(given)
    if names is None:
        if not seen:
            return None
        if seen[0] < 0:
            raise ManifestError(f"label {seen[0]} is negative; labels must lie in [0, classes)")
        return [str(i) for i in range(seen[-1] + 1)]
    if len(set(names)) != len(names):
        raise ManifestError(
            f"class names repeat: {sorted(n for n in set(names) if names.count(n) > 1)[:5]}"
        )
    bad = [x for x in seen if not 0 <= x < len(names)]
    if bad:
        raise ManifestError(f"labels {bad[:5]} lie outside the {len(names)} class names given")
    return names
