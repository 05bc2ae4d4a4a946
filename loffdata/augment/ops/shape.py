"""Pooling, views and the final cast: the steps that shape the batch, torch only."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from loffdata.augment.opkit import Field, Op, Step, StepContext

__all__ = ["OPS", "STEPS", "pool", "repeat_views", "finish", "prepare_labels"]


def pool(x: torch.Tensor, spec) -> torch.Tensor:
    """Average-pool every map (integer factor or adaptive); identity when off."""
    if spec.pool_size is not None:
        return F.adaptive_avg_pool2d(x.float(), tuple(spec.pool_size))
    if spec.pool_factor > 1:
        return F.avg_pool2d(x.float(), spec.pool_factor)
    return x


def repeat_views(x: torch.Tensor, views: int) -> torch.Tensor:
    """Rows ``i * views + v`` = sample ``i``."""
    return x if views == 1 else x.repeat_interleave(views, dim=0)


def prepare_labels(y: torch.Tensor | None, views: int, rows: int) -> torch.Tensor | None:
    """Check labels and repeat them per view."""
    if y is None:
        return None
    if y.ndim != 1 or y.shape[0] * views != rows:
        raise ValueError(
            f"labels must be 1-D with one entry per sample, got shape {tuple(y.shape)}"
        )
    return y.repeat_interleave(views) if views > 1 else y


def finish(x: torch.Tensor, dtype: torch.dtype, spec) -> torch.Tensor:
    """Cast to the spec's ``out_dtype`` or back to the input dtype."""
    target = getattr(torch, spec.out_dtype) if spec.out_dtype else dtype
    return x.to(target)


def _pool_step(x, y, ctx: StepContext):
    return pool(x, ctx.spec), y


def _views_step(x, y, ctx: StepContext):
    views = ctx.spec.views
    return repeat_views(x, views), prepare_labels(y, views, ctx.params.rows)


def _cast_step(x, y, ctx: StepContext):
    return finish(x, ctx.dtype, ctx.spec), y


def _check_pool(spec) -> None:
    if spec.pool_factor < 1:
        raise ValueError(f"AugmentSpec.pool_factor must be >= 1, got {spec.pool_factor}")
    if spec.pool_factor > 1 and spec.pool_size is not None:
        raise ValueError("set either pool_factor or pool_size, not both")
    size = spec.pool_size
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ValueError(f"AugmentSpec.pool_size must be (H, W) with H, W >= 1, got {size!r}")


def _check_views(spec) -> None:
    if spec.views < 1:
        raise ValueError(f"AugmentSpec.views must be >= 1, got {spec.views}")


def _check_cast(spec) -> None:
    if spec.out_dtype not in (None, "float16", "float32", "bfloat16"):
        raise ValueError(
            f"out_dtype must be None, 'float16', 'float32' or 'bfloat16', got {spec.out_dtype!r}"
        )


OPS = (
    Op(
        "views",
        (Field("views", "int", 1, "independently augmented views returned per input sample."),),
        doc="each sample repeated `views` times; every view gets its own parameters",
        idle=lambda spec: spec.views == 1,
        validate=_check_views,
        examples={"views": {"views": 3, "crop": 1.0, "noise": 1.0}},
    ),
    Op(
        "pool",
        (
            Field("pool_factor", "int", 1, "integer average-pooling factor applied first."),
            Field(
                "pool_size",
                "tuple[int, int] | None",
                None,
                "adaptive average pooling to this grid, applied first (``None`` = off).",
                "pair",
            ),
        ),
        doc="`avg_pool2d(k)` or `adaptive_avg_pool2d(size)` of every map, first",
        idle=lambda spec: spec.pool_factor == 1 and spec.pool_size is None,
        validate=_check_pool,
        examples={
            "pool_factor": {"pool_factor": 2, "crop": 1.0},
            "pool_size": {"pool_size": (3, 5), "hflip": 0.5},
        },
    ),
    Op(
        "cast",
        (Field("out_dtype", "str | None", None, "output dtype name; ``None``: input dtype."),),
        doc="back to the input dtype (all arithmetic is float32)",
        idle=lambda spec: True,  # a cast alone leaves the identity preset the identity
        validate=_check_cast,
    ),
)
STEPS = (
    Step("pool", 10, _pool_step),
    Step("views", 20, _views_step),
    Step("cast", 90, _cast_step),
)
