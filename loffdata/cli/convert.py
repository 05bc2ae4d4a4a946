"""``loffdata convert``: the command line of :func:`loffdata.ops.convert.convert`.

Every flag is checked against the source's manifest before anything is written
(:class:`~loffdata.ops.convert.ConfigMismatch` becomes a :class:`CliError` naming the flag).
"""

from __future__ import annotations

from typing import Any

from loffdata.errors import CliError
from loffdata.ops.convert import ConfigMismatch, ConvertConfig, convert

__all__ = ["command"]


def command(
    src: str,
    dst: str,
    *,
    pool: int = 1,
    crop: tuple[int, int, int, int] | None = None,
    dtype: str | None = None,
    extras: str = "all",
    max_samples: int | None = None,
    max_bytes: int | None = None,
    prefix: str = "shard",
    overwrite: bool = False,
    quiet: bool = False,
    endpoint_url: str | None = None,
    nonfinite: str = "refuse",
) -> None:
    """Derives a dataset from a dataset: pool, crop, change dtype, select extras, re-shard.

    Example: ``loffdata convert SRC DST --pool 2 --dtype int8``. Every value is checked
    against the source's manifest before anything is written; re-running resumes.

    Args:
        src: source dataset directory or manifest URL (local, http(s)://, s3://).
        dst: destination directory or URL (any fsspec URL).
        pool: average-pool the feature map by this integer factor (floor mode, as avg_pool2d).
        crop: top,left,height,width in the source grid, applied before pooling
            (``--crop 0,0,32,32`` or ``--crop [0,0,32,32]``).
        dtype: storage dtype of the output: float32, float16, bfloat16 or int8; default: the
            source's.
        extras: comma-separated names of the extra tensors to keep; ``all`` keeps every one,
            ``none`` drops all.
        max_samples: most samples per output shard (default: the source's shard boundaries).
        max_bytes: most bytes per output shard.
        prefix: output shard name prefix.
        overwrite: replace an existing conversion with other settings at DST (a switch:
            ``--overwrite``).
        quiet: no progress bar.
        endpoint_url: an S3-compatible store's endpoint, used at both ends.
        nonfinite: what to do with NaN/infinite features: ``refuse`` (an error naming the
            sample) or ``zero`` (stored as 0).
    """
    cfg = _cli_config(
        pool=pool,
        crop=crop,
        dtype=dtype,
        extras=extras,
        max_samples=max_samples,
        max_bytes=max_bytes,
        prefix=prefix,
        nonfinite=nonfinite,
    )
    options = {} if endpoint_url is None else {"client_kwargs": {"endpoint_url": endpoint_url}}
    try:
        m = convert(
            src,
            dst,
            cfg,
            src_options=options,
            dst_options=options,
            overwrite=overwrite,
            progress=not quiet,
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
