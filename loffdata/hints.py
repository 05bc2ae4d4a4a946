"""Checks that turn a late, cryptic failure into an early one-line error saying what to do.

Called at construction (``LoffLoader``, ``extract``, the CLIs), before any work starts:

- :func:`check_device`: ``device="cuda"`` on a machine without CUDA (otherwise torch fails at
  the first batch with ``invalid argument to exchangeDevice``);
- :func:`check_dataset_dir`: a local dataset path without ``manifest.json`` is answered with
  the closest dataset found below it (``out/demo`` -> ``out/demo/train``).

Light: torch is imported only inside :func:`check_device`.
"""

from __future__ import annotations

import glob
import os
from typing import Any

from loffdata.errors import LoffError, ManifestError

__all__ = [
    "DeviceError",
    "check_dataset_dir",
    "check_device",
    "check_manifest_for_glob",
    "datasets_below",
]

_MANIFEST = "manifest.json"
_MAX_DEPTH = 3


class DeviceError(LoffError, ValueError):
    """The requested device does not exist on this machine."""


def check_device(device: Any) -> None:
    """Raises :class:`DeviceError` when ``device`` is a CUDA device this machine does not have."""
    import torch

    dev = torch.device(device)
    if dev.type != "cuda":
        return
    if not torch.cuda.is_available():
        raise DeviceError(
            f"device={str(device)!r}, but CUDA is not available on this machine "
            f"(torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none'}); "
            "use device='cpu' (or 'auto' where the option exists), or install a CUDA build of torch"
        )
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        raise DeviceError(
            f"device={str(device)!r}, but this machine has {count} CUDA device(s): "
            f"cuda:0..cuda:{count - 1}"
        )


def datasets_below(path: str, *, max_depth: int = _MAX_DEPTH) -> list[str]:
    """Local directories below ``path`` (up to ``max_depth`` levels) that hold a manifest, nearest
    first."""
    found: list[tuple[int, str]] = []
    root = os.path.abspath(path)
    for folder, dirs, files in os.walk(root):
        depth = folder[len(root) :].count(os.sep)
        if depth >= max_depth:
            dirs[:] = []
        dirs.sort()
        if _MANIFEST in files and folder != root:
            found.append((depth, os.path.relpath(folder)))
    return [p for _, p in sorted(found, key=lambda t: (t[0], _split_rank(t[1]), t[1]))]


def _split_rank(path: str) -> int:
    order = {"train": 0, "val": 1, "test": 2}
    return order.get(os.path.basename(path), 3)


def _local_dir_path(text: str) -> str | None:
    """The local directory ``text`` names, or ``None`` for a URL, a file or a shard list."""
    if "://" in text and not text.startswith("file://"):
        return None
    path = text.removeprefix("file://")
    if path.endswith(".json") or path.endswith(".tar") or "{" in path:
        return None
    return path


def check_dataset_dir(source: Any) -> None:
    """For a local dataset path without a manifest, raises one line naming what to use instead.

    Remote URLs, shard lists and paths with a manifest pass through unchanged.

    Raises:
        ManifestError: ``no dataset at 'out/demo' (no manifest.json); did you mean
        'out/demo/train'?``
    """
    if not isinstance(source, (str, os.PathLike)):
        return
    text = os.fspath(source)
    path = _local_dir_path(text)
    if path is None or os.path.isfile(os.path.join(path, _MANIFEST)):
        return
    if not os.path.exists(path):
        parent = _existing_parent(path)
        near = f"; closest existing directory: {parent!r}" if parent and parent != "." else ""
        raise ManifestError(
            f"no dataset at {text!r}: the directory does not exist{near} "
            "(check the path, or write the dataset first with tools/shard.py)"
        )
    below = datasets_below(path)
    if below:
        more = f"; datasets below it: {', '.join(below[:5])}" if len(below) > 1 else ""
        raise ManifestError(
            f"no dataset at {text!r} (no {_MANIFEST}); did you mean {below[0]!r}?{more}"
        )
    if any(n.endswith(".tar") and not n.startswith(".") for n in os.listdir(path)):
        raise ManifestError(
            f"no dataset at {text!r}: .tar shards but no {_MANIFEST} (shards from another "
            f"writer?); build one with: loffdata index {text}"
        )
    raise ManifestError(
        f"no dataset at {text!r}: no {_MANIFEST} in it or below it "
        "(write one with tools/shard.py, or pass a list of .tar shards)"
    )


def check_manifest_for_glob(source: Any) -> None:
    """For the commands that need a manifest (``inspect``, ``verify``, ``show``): a local glob
    of ``.tar`` shards with no manifest beside them is answered with the command that builds one.

    Raises:
        ManifestError: ``no dataset at 'DIR/*.tar': shards without a manifest.json ...``
    """
    text = os.fspath(source) if isinstance(source, (str, os.PathLike)) else ""
    if text and _foreign_glob(text.removeprefix("file://")):
        raise ManifestError(
            f"no dataset at {text!r}: shards without a {_MANIFEST} (shards from another "
            f"writer?); build one with: loffdata index '{text}'"
        )


def _foreign_glob(path: str) -> bool:
    """A glob of ``.tar`` shards whose folder has no manifest (shards from another writer)."""
    if not any(c in path for c in "*?["):
        return False
    found = [m for m in glob.glob(path) if m.endswith(".tar")]
    return bool(found) and not any(
        os.path.isfile(os.path.join(os.path.dirname(m), _MANIFEST)) for m in found
    )


def _existing_parent(path: str) -> str | None:
    parent = os.path.dirname(os.path.abspath(path))
    while parent and not os.path.isdir(parent):
        parent = os.path.dirname(parent)
    return os.path.relpath(parent) if parent else None
