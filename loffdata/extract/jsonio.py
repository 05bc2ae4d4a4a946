"""JSON files of an extraction (config record, sidecars, manifests) on any fsspec filesystem."""

from __future__ import annotations

import json
from typing import Any

from loffdata import util

__all__ = ["jsonable", "read_json", "write_json"]


def write_json(fs: Any, path: str, obj: Any) -> None:
    """Atomic on local disk (see :func:`loffdata.util.write_json`)."""
    util.write_json(path, obj, fs=fs)


def read_json(fs: Any, path: str) -> Any:
    with fs.open(path, "r") as f:
        return json.load(f)


def jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))
