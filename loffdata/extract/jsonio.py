"""JSON files of an extraction (config record, sidecars, manifests) on any fsspec filesystem."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["jsonable", "read_json", "write_json"]


def write_json(fs: Any, path: str, obj: Any) -> None:
    text = json.dumps(obj, indent=1)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("file", "local"):
        tmp = f"{path}.tmp"
        with fs.open(tmp, "w") as f:
            f.write(text)
        fs.mv(tmp, path)
    else:  # object stores: an object appears only once fully uploaded
        with fs.open(path, "w") as f:
            f.write(text)


def read_json(fs: Any, path: str) -> Any:
    with fs.open(path, "r") as f:
        return json.load(f)


def jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))
