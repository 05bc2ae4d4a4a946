"""Rotation by quarter turns (``torch.rot90`` per group of equal k), torch only."""

from __future__ import annotations

import numpy as np
import torch

from loffdata.augment import rng
from loffdata.augment.opkit import Draw, Field, Op, Params, Step
from loffdata.augment.staging import stage

__all__ = ["OPS", "STEPS", "rot90"]

_S_ROT_ON, _S_ROT_K = 5, 6


def rot90(x: torch.Tensor, params: Params) -> torch.Tensor:
    """Rotate rows by ``rot_k`` quarter turns (as ``torch.rot90`` over (H, W))."""
    if not params.rot_k.any():
        return x
    x = x.clone()
    ks = [k for k in (1, 2, 3) if np.any(params.rot_k == k)]
    rows = stage(x.device, **{str(k): np.flatnonzero(params.rot_k == k) for k in ks})
    for k in ks:
        x[rows[str(k)]] = torch.rot90(x[rows[str(k)]], k, dims=(-2, -1))
    return x


def _rot_k(spec, d: Draw) -> dict[str, np.ndarray]:
    if d.out_hw[0] == d.out_hw[1]:
        k = 1 + np.floor(rng.uniform(d.keys, _S_ROT_K) * 3).astype(np.int64)
    else:  # odd turns would change the grid shape inside a batch
        k = np.full(d.keys.shape[0], 2, dtype=np.int64)
    return {"rot_k": np.where(d.on["rot90"], k, 0)}


OPS = (
    Op(
        "rot90",
        (
            Field(
                "rot90",
                "float",
                0.0,
                "probability of a random multiple of 90 degrees (k in {1, 2, 3}; only k=2 "
                "on non-square grids).",
                "prob",
            ),
        ),
        doc="`torch.rot90(x, k, dims=(H, W))`, `k` uniform in {1, 2, 3} (2 on a non-square grid)",
        slots=(_S_ROT_ON, _S_ROT_K),
        sample=_rot_k,
        trivial=3,
        examples={"rot90": {"rot90": 0.8, "hflip": 0.5}},
    ),
)
STEPS = (Step("rot90", 50, lambda x, y, ctx: (rot90(x, ctx.params), y)),)
