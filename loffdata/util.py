"""Small helpers that several layers need, each written once.

Bottom layer, beside :mod:`loffdata.errors`: imports only the standard library at import
time (fsspec and torch are imported inside the functions that use them).

- where a URL or filesystem points: :func:`is_local`, :func:`url_protocol`,
  :func:`fs_protocol`, :func:`fs_is_local`;
- :func:`write_json`: a JSON file written atomically on local disks;
- :class:`DistContext`, :func:`distributed_rank_world`, :func:`init_distributed`: the
  ``torch.distributed`` process group, created under ``torchrun`` unless one exists;
- :data:`UNSET` and :func:`merge`: keyword settings that override a config dataclass;
- :func:`lazy_exports`: a package's public names, imported from their modules on first use.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from loffdata.protocols import fs_protocol, url_protocol

__all__ = [
    "check_int",
    "is_local",
    "url_protocol",
    "fs_protocol",
    "fs_is_local",
    "write_json",
    "DistContext",
    "distributed_rank_world",
    "init_distributed",
    "UNSET",
    "merge",
    "lazy_exports",
]

_LOCAL_PROTOCOLS = ("file", "local")

# -- where things are --------------------------------------------------------------------


def is_local(url: str | os.PathLike) -> bool:
    """Whether ``url`` is a plain path or a ``file://`` URL."""
    text = os.fspath(url)
    return "://" not in text or text.startswith("file://")


def check_int(config: Any, name: str, low: int) -> None:
    """Raises ``ValueError`` unless ``config.<name>`` is an int (not a bool) >= ``low``."""
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def fs_is_local(fs: Any) -> bool:
    """Whether an fsspec filesystem is the local disk."""
    return fs_protocol(fs) in _LOCAL_PROTOCOLS


def write_json(
    path: str | os.PathLike,
    obj: Any,
    *,
    fs: Any = None,
    indent: int | None = 1,
    default: Callable[[Any], Any] | None = None,
    **storage_options: Any,
) -> None:
    """Writes ``obj`` as JSON to ``path`` (a path or fsspec URL, or a path on ``fs``), secrets
    (URL userinfo, values of secret-like keys) replaced by ``***`` (:mod:`loffdata.redact`).

    On a local disk the text goes to ``<path>.tmp`` first and is renamed into place, so
    readers see the old file or the new one, never half of one; object stores make an object
    visible only once it is fully uploaded, so it is written in place there.
    """
    from loffdata.redact import redact_json_text

    text = redact_json_text(
        json.dumps(obj, indent=indent, default=default)
    )  # no secret reaches a file
    path = os.fspath(path)
    if fs is None:
        import fsspec

        fs, path = fsspec.core.url_to_fs(path, **storage_options)
    if not fs_is_local(fs):
        with fs.open(path, "w") as f:
            f.write(text)
        return
    tmp = f"{path}.tmp"
    with fs.open(tmp, "w") as f:
        f.write(text)
    fs.mv(tmp, path)


# -- torch.distributed ----------------------------------------------------------------------


@dataclass
class DistContext:
    """This process's place in the process group (``world_size`` 1 without one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed

            torch.distributed.barrier()


def distributed_rank_world() -> tuple[int, int] | None:
    """``(rank, world_size)`` of the initialised process group, else ``None``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return None


def init_distributed(backend: str, *, timeout: timedelta | None = None) -> DistContext:
    """The process group: the existing one, one created under ``torchrun`` (``WORLD_SIZE >
    1``; then ``owns_group`` is set and the caller destroys it), or none (world size 1)."""
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    live = distributed_rank_world()
    if live is not None:
        return DistContext(live[0], live[1], local_rank)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistContext()
    extra = {} if timeout is None else {"timeout": timeout}
    dist.init_process_group(backend, **extra)
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, owns_group=True)


# -- keyword settings over a config ------------------------------------------------------------


class _Unset:
    """The default of a keyword setting that was not given: the config's value applies."""

    _instance: _Unset | None = None

    def __new__(cls) -> _Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<from config>"

    def __reduce__(self) -> str:
        return "UNSET"


#: Default of the keyword settings of ``StreamingDataset`` and ``LoffLoader``: "take the
#: config's value". The defaults themselves are declared once, in the config dataclasses.
UNSET: Any = _Unset()


def merge(config: Any, **given: Any) -> Any:
    """``config`` with the keyword settings that were given (not :data:`UNSET`) replaced."""
    changes = {k: v for k, v in given.items() if v is not UNSET}
    return dataclasses.replace(config, **changes) if changes else config


# -- lazy package exports -----------------------------------------------------------------------


def lazy_exports(
    package: str, where: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package`` whose public names (keys) live in the
    modules named by the values (``"loffdata.format.codec"`` or ``"module:attribute"``);
    a module is imported when one of its names is first used, so importing a package stays
    light."""
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attr = where[name].partition(":")
        value = getattr(importlib.import_module(module), attr or name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(where)

    return __getattr__, __dir__
