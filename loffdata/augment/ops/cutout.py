"""Cutout / random erasing (DeVries & Taylor 2017; Zhong et al. 2020) of a feature map.

With probability ``cutout`` a row gets one rectangle, of side ``s * H`` by ``s * W``
(``s ~ U(cutout_size)``, rounded to whole cells, placed uniformly inside the output
grid), set to 0 in every channel -- after the channel step, so with ``normalize`` the
erased cells hold the channel mean. Torch: ``torch.where`` over the box (exact in any
dtype); DALI: ``fn.erase`` with per-sample ``anchor``/``shape`` inputs.
"""

from __future__ import annotations

import numpy as np
import torch

from loffdata.augment import rng
from loffdata.augment.opkit import DaliStep, Draw, Field, Op, Params, Step, check_range
from loffdata.augment.staging import stage

__all__ = ["OPS", "STEPS", "cutout"]

_S_ON, _S_SIZE, _S_Y, _S_X = 19, 20, 21, 22


def _boxes(spec, d: Draw) -> dict[str, np.ndarray]:
    """[R, 4] int64 boxes (y0, x0, y1, x1) on the output grid; empty where off."""
    h, w = d.out_hw
    lo, hi = spec.cutout_size
    s = lo + rng.uniform(d.keys, _S_SIZE) * (hi - lo)
    ch = np.where(d.on["cutout"], np.floor(s * h + 0.5), 0).astype(np.int64)
    cw = np.where(d.on["cutout"], np.floor(s * w + 0.5), 0).astype(np.int64)
    y0 = np.floor(rng.uniform(d.keys, _S_Y) * (h - ch + 1)).astype(np.int64)
    x0 = np.floor(rng.uniform(d.keys, _S_X) * (w - cw + 1)).astype(np.int64)
    return {"cutout_box": np.stack([y0, x0, y0 + ch, x0 + cw], axis=1)}


def _active(params: Params) -> bool:
    box = params.cutout_box
    return bool(np.any((box[:, 2] > box[:, 0]) & (box[:, 3] > box[:, 1])))


def cutout(x: torch.Tensor, params: Params) -> torch.Tensor:
    """Zero each row's ``cutout_box`` in every channel; ``x`` itself when no row has one."""
    if not _active(params):
        return x
    box = stage(x.device, box=params.cutout_box)["box"][:, :, None, None]
    yy = torch.arange(x.shape[-2], device=x.device)[None, :, None]
    xx = torch.arange(x.shape[-1], device=x.device)[None, None, :]
    inside = (yy >= box[:, 0]) & (yy < box[:, 2]) & (xx >= box[:, 1]) & (xx < box[:, 3])
    return torch.where(inside[:, None], torch.zeros((), dtype=x.dtype, device=x.device), x)


def _feeds(x, ctx, variant):
    box = ctx.params.cutout_box
    return {
        "cutout_anchor": box[:, :2].astype(np.float32),
        "cutout_shape": (box[:, 2:] - box[:, :2]).astype(np.float32),
    }


def _graph(x, variant, g):
    anchor, shape = g.source("cutout_anchor"), g.source("cutout_shape")
    return g.fn.erase(x, anchor=anchor, shape=shape, axis_names="HW", fill_value=0.0)


OPS = (
    Op(
        "cutout",
        (
            Field("cutout", "float", 0.0, "probability of erasing one rectangle.", "prob"),
            Field(
                "cutout_size",
                "tuple[float, float]",
                (0.1, 0.4),
                "range of the rectangle's side, as a fraction of each side of the grid.",
                "pair",
            ),
        ),
        doc="one rectangle of side `s * (H, W)`, `s ~ U(cutout_size)`, set to 0 (the mean "
        "when normalised)",
        slots=(_S_ON, _S_SIZE, _S_Y, _S_X),
        sample=_boxes,
        validate=lambda spec: check_range("cutout_size", spec.cutout_size, 0.0, 1.0),
        examples={
            "cutout": {"cutout": 0.8, "cutout_size": (0.2, 0.6)},
            "cutout_crop": {"cutout": 1.0, "crop": 1.0, "out_size": (5, 7), "normalize": True},
        },
    ),
)
STEPS = (
    Step(
        "cutout",
        45,
        lambda x, y, ctx: (cutout(x, ctx.params), y),
        DaliStep(lambda x, ctx: True if _active(ctx.params) else None, _feeds, _graph),
    ),
)
