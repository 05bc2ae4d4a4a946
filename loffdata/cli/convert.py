"""``loffdata convert``: the command line of :func:`loffdata.ops.convert.convert`.

The flags are the fields of :class:`~loffdata.ops.convert.ConvertConfig` (its defaults,
declared once there; ``extras`` as text) and of :class:`CommandFlags` (what only the
command line has), listed by :data:`OPTIONS`. Every flag is checked against the source's
manifest before anything is written (:class:`~loffdata.ops.convert.ConfigMismatch` becomes
a :class:`CliError` naming the flag).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from loffdata.cli.parse import Option, options_from_dataclass, options_from_function
from loffdata.errors import CliError
from loffdata.ops.convert import ConfigMismatch, ConvertConfig, convert

__all__ = ["OPTIONS", "CommandFlags", "command"]


@dataclass(frozen=True)
class CommandFlags:
    """The flags of ``loffdata convert`` that are not :class:`ConvertConfig` fields.

    Attributes:
        extras: comma-separated names of the extra tensors to keep; ``all`` keeps every one,
            ``none`` drops all.
        overwrite: replace an existing conversion with other settings at DST (a switch:
            ``--overwrite``).
        quiet: no progress bar.
        endpoint_url: an S3-compatible store's endpoint, used at both ends.
    """

    extras: str = "all"
    overwrite: bool = False
    quiet: bool = False
    endpoint_url: str | None = None


#: ``--help`` text of the :class:`ConvertConfig` fields, worded for the command line
_HELP = {
    "pool": "average-pool the feature map by this integer factor (floor mode, as avg_pool2d).",
    "crop": "top,left,height,width in the source grid, applied before pooling "
    "(``--crop 0,0,32,32`` or ``--crop [0,0,32,32]``).",
    "dtype": "storage dtype of the output: float32, float16, bfloat16 or int8; default: the "
    "source's.",
    "max_samples": "most samples per output shard (default: the source's shard boundaries).",
    "max_bytes": "most bytes per output shard.",
    "prefix": "output shard name prefix.",
    "nonfinite": "what to do with NaN/infinite features: ``refuse`` (an error naming the "
    "sample) or ``zero`` (stored as 0).",
}


def command(src: str, dst: str, **flags: Any) -> None:
    """Derives a dataset from a dataset: pool, crop, change dtype, select extras, re-shard.

    Example: ``loffdata convert SRC DST --pool 2 --dtype int8``. Every value is checked
    against the source's manifest before anything is written; re-running resumes.

    Args:
        src: source dataset directory or manifest URL (local, http(s)://, s3://).
        dst: destination directory or URL (any fsspec URL).
        **flags: the options of :data:`OPTIONS` (``loffdata convert --help``).
    """
    names = {f.name for f in dataclasses.fields(CommandFlags)}
    cli = CommandFlags(**{k: v for k, v in flags.items() if k in names})
    cfg = _cli_config(extras=cli.extras, **{k: v for k, v in flags.items() if k not in names})
    options = (
        {} if cli.endpoint_url is None else {"client_kwargs": {"endpoint_url": cli.endpoint_url}}
    )
    try:
        m = convert(
            src,
            dst,
            cfg,
            src_options=options,
            dst_options=options,
            overwrite=cli.overwrite,
            progress=not cli.quiet,
        )
    except ConfigMismatch as err:
        raise CliError(f"--{err}") from None
    print(
        f"wrote {m.num_samples} samples in {len(m.shards)} shards to {dst}: "
        f"{m.features.dtype}{list(m.features.shape)}"
    )


def _cli_config(*, extras: str, **values: Any) -> ConvertConfig:
    """The :class:`ConvertConfig` of the command's flags, or a :class:`CliError` naming the flag."""
    keep = {"all": None, "none": ()}.get(
        extras.lower(), tuple(x.strip() for x in extras.split(",") if x.strip())
    )
    if keep == () and extras.lower() != "none":
        raise CliError(f"--extras {extras!r}: expected comma-separated names, 'all' or 'none'")
    try:
        return ConvertConfig(extras=keep, **values)
    except (TypeError, ValueError) as err:
        raise CliError(f"--{err}") from None


def _options() -> list[Option]:
    """SRC and DST, the :class:`ConvertConfig` fields (``extras`` as text), then the others."""
    cli = {o.name: o for o in options_from_dataclass(CommandFlags)}
    config = [
        cli.pop(o.name) if o.name in cli else dataclasses.replace(o, doc=_HELP.get(o.name, o.doc))
        for o in options_from_dataclass(ConvertConfig)
    ]
    return [*options_from_function(command), *config, *cli.values()]


#: every option of ``loffdata convert``, in ``--help`` order
OPTIONS: list[Option] = _options()
command.options = OPTIONS  # type: ignore[attr-defined]  # read by cli/main.py's dispatch
