"""Random resized crop and flips: one resampling step (torch ``grid_sample``, DALI ``resize``).

Torch resamples the crop box with ``grid_sample(bilinear, align_corners=False,
padding_mode="border")`` over per-row affine grids (a flipped axis has a reversed box);
when no row is cropped or resized, flips are plain ``torch.flip`` (exact in any dtype).
DALI runs ``fn.resize(roi_start, roi_end, antialias=False)``: a reversed ROI flips.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from loffdata.augment import rng
from loffdata.augment.opkit import DaliStep, Draw, Field, Op, Params, Step, check_range
from loffdata.augment.staging import stage

__all__ = ["OPS", "STEPS", "spatial", "roi", "resamples"]

_ATTEMPTS = 10  # random-resized-crop tries per row before falling back to the full map
_S_HFLIP, _S_VFLIP, _S_CROP_ON, _S_AREA, _S_RATIO, _S_CX, _S_CY = 3, 4, 7, 8, 9, 10, 11


def roi(params: Params) -> tuple[np.ndarray, np.ndarray]:
    """ROI start/end [R, 2] float32 in (y, x) order; a flipped axis has start > end."""
    y0, x0, y1, x1 = (params.box[:, i] for i in range(4))
    ys = np.where(params.vflip, y1, y0)
    ye = np.where(params.vflip, y0, y1)
    xs = np.where(params.hflip, x1, x0)
    xe = np.where(params.hflip, x0, x1)
    return np.stack([ys, xs], 1).astype(np.float32), np.stack([ye, xe], 1).astype(np.float32)


def resamples(params: Params) -> bool:
    """Whether any row needs bilinear resampling (a crop or a grid change)."""
    full = np.array([0.0, 0.0, params.grid[0], params.grid[1]])
    return params.out_hw != params.grid or not np.all(params.box == full)


def _flips(params: Params) -> bool:
    return bool(params.hflip.any() or params.vflip.any())


def spatial(x: torch.Tensor, params: Params) -> torch.Tensor:
    """Crop box + flips resampled to ``params.out_hw`` (bilinear, float32 out); plain flips
    (any dtype) when nothing is resampled; ``x`` itself when nothing changes."""
    if not resamples(params):
        if not _flips(params):
            return x
        t = stage(x.device, hf=params.hflip, vf=params.vflip)
        hf, vf = t["hf"][:, None, None, None], t["vf"][:, None, None, None]
        x = torch.where(hf, x.flip(-1), x) if params.hflip.any() else x
        return torch.where(vf, x.flip(-2), x) if params.vflip.any() else x
    x = x.float()
    start, end = (torch.as_tensor(a, dtype=torch.float64) for a in roi(params))
    gh, gw = params.grid
    theta = torch.zeros(params.rows, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = (end[:, 1] - start[:, 1]) / gw
    theta[:, 0, 2] = (start[:, 1] + end[:, 1]) / gw - 1
    theta[:, 1, 1] = (end[:, 0] - start[:, 0]) / gh
    theta[:, 1, 2] = (start[:, 0] + end[:, 0]) / gh - 1
    size = (params.rows, x.shape[1], *params.out_hw)
    grid = stage(x.device, g=F.affine_grid(theta, size, align_corners=False).float().numpy())["g"]
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _crop_boxes(spec, d: Draw) -> dict[str, np.ndarray]:
    """Random-resized-crop boxes (torchvision's rule, continuous coordinates, 10 tries)."""
    keys, (gh, gw) = d.keys, d.grid
    lo, hi = spec.crop_scale
    if spec.trivial:  # magnitude m -> area 1 - m * (1 - lo)
        lo = hi = 1.0 - d.mag * (1.0 - lo)
    area = (
        np.asarray(lo)[..., None]
        + rng.uniform(keys, _S_AREA, _ATTEMPTS) * (np.asarray(hi) - np.asarray(lo))[..., None]
    )
    logr = np.log(spec.crop_ratio)
    ratio = np.exp(logr[0] + rng.uniform(keys, _S_RATIO, _ATTEMPTS) * (logr[1] - logr[0]))
    cw, ch = np.sqrt(area * gh * gw * ratio), np.sqrt(area * gh * gw / ratio)
    valid = (cw <= gw) & (ch <= gh)
    first = np.argmax(valid, axis=1)
    pick = np.arange(keys.shape[0])
    ok = d.on["crop"] & valid[pick, first]
    cw, ch = np.where(ok, cw[pick, first], gw), np.where(ok, ch[pick, first], gh)
    x0 = rng.uniform(keys, _S_CX) * (gw - cw)
    y0 = rng.uniform(keys, _S_CY) * (gh - ch)
    return {"box": np.stack([y0, x0, y0 + ch, x0 + cw], axis=1)}


def _check_crop(spec) -> None:
    check_range("crop_scale", spec.crop_scale, 0.0, 1.0, open_low=True)
    check_range("crop_ratio", spec.crop_ratio, 0.0, math.inf, open_low=True)
    size = spec.out_size
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ValueError(f"AugmentSpec.out_size must be (H, W) with H, W >= 1, got {size!r}")


def _torch_step(x, y, ctx):
    return spatial(x, ctx.params), y


def _plan(x, ctx):
    params = ctx.params
    if not (resamples(params) or _flips(params)) or ctx.backend.resizes_in_torch(x.shape[1]):
        return (
            None  # nothing to do, or wide maps: one batched grid_sample, not a launch per channel
        )
    return True


def _feeds(x, ctx, variant):
    start, end = roi(ctx.params)
    return {"roi_start": start, "roi_end": end}


def _graph(x, variant, g):
    return g.fn.resize(
        x,
        size=list(g.out_hw),
        roi_start=g.source("roi_start"),
        roi_end=g.source("roi_end"),
        antialias=False,
        interp_type=g.types.INTERP_LINEAR,
        device=g.place,
        **g.resize_options,
    )


OPS = (
    Op(
        "crop",
        (
            Field("out_size", "tuple[int, int] | None", None, "output grid (H, W).", "pair"),
            Field("crop", "float", 0.0, "probability of a random resized crop.", "prob"),
            Field("crop_scale", "tuple[float, float]", (0.25, 1.0), "crop area range.", "pair"),
            Field("crop_ratio", "tuple[float, float]", (3 / 4, 4 / 3), "crop W/H range.", "pair"),
        ),
        doc="torchvision's random resized crop in continuous coordinates, resized bilinearly",
        slots=(_S_CROP_ON, _S_AREA, _S_RATIO, _S_CX, _S_CY),
        sample=_crop_boxes,
        trivial=4,
        idle=lambda spec: spec.crop == 0 and spec.out_size is None,
        validate=_check_crop,
        examples={
            "crop": {"crop": 1.0, "crop_scale": (0.1, 1.0)},
            "crop_out_size": {"crop": 0.7, "out_size": (5, 6), "hflip": 0.5, "vflip": 0.5},
        },
    ),
    Op(
        "hflip",
        (Field("hflip", "float", 0.0, "probability of a horizontal flip.", "prob"),),
        doc="`torch.flip` over W (folded into the crop as a reversed box)",
        slots=(_S_HFLIP,),
        sample=lambda spec, d: {"hflip": d.on["hflip"]},
        trivial=1,
        examples={"hflip": {"hflip": 0.5}},
    ),
    Op(
        "vflip",
        (Field("vflip", "float", 0.0, "probability of a vertical flip.", "prob"),),
        doc="`torch.flip` over H (folded into the crop as a reversed box)",
        slots=(_S_VFLIP,),
        sample=lambda spec, d: {"vflip": d.on["vflip"]},
        trivial=2,
        examples={"vflip": {"vflip": 0.5}},
    ),
)
STEPS = (Step("spatial", 30, _torch_step, DaliStep(_plan, _feeds, _graph)),)
