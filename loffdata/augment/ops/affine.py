"""Jitter, Gaussian noise, normalisation and channel dropout: one fused ``x * A + B + z * S``.

The per-channel coefficients ``A, B, S`` come from :mod:`loffdata.augment.channel`; torch
applies them with ``addcmul``, DALI with its arithmetic operators on per-sample
``[C, 1, 1]`` inputs, the noise field ``z`` drawn by torch and fed as an input.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from loffdata.augment import rng
from loffdata.augment.channel import is_identity, noise_field
from loffdata.augment.opkit import DaliStep, Draw, Field, Op, Step, check_range
from loffdata.augment.staging import stage

__all__ = ["OPS", "STEPS"]

_S_NOISE_ON, _S_NOISE, _S_NOISE_SEED = 12, 13, 23
_S_JIT_ON, _S_CONTRAST, _S_BRIGHT, _S_DROP_ON, _S_DROP = 14, 15, 16, 17, 18


def _jitter(spec, d: Draw) -> dict[str, np.ndarray]:
    width = d.channels if spec.jitter_per_channel else 1
    jit = (d.on["jitter"] * d.mag)[:, None]
    contrast = 1.0 + jit * spec.contrast * (2 * rng.uniform(d.keys, _S_CONTRAST, width) - 1)
    bright = jit * spec.brightness * (2 * rng.uniform(d.keys, _S_BRIGHT, width) - 1)
    shape = (d.keys.shape[0], d.channels)
    return {
        "contrast": np.broadcast_to(contrast, shape).astype(np.float32),
        "brightness": np.broadcast_to(bright, shape).astype(np.float32),
    }


def _noise(spec, d: Draw) -> dict[str, np.ndarray]:
    """Each row's noise std and the seed of its noise field, keyed per row like the rest."""
    lo, hi = spec.noise_std
    scale = hi * d.mag if spec.trivial else lo + rng.uniform(d.keys, _S_NOISE) * (hi - lo)
    seeds = (rng.mix(d.keys, _S_NOISE_SEED) >> np.uint64(1)).astype(np.int64)
    return {
        "noise_scale": np.where(d.on["noise"], scale, 0.0).astype(np.float32),
        "noise_seed": seeds,
    }


def _dropout(spec, d: Draw) -> dict[str, np.ndarray]:
    rate = spec.channel_dropout_rate * d.mag
    drop = d.on["channel_dropout"][:, None] & (
        rng.uniform(d.keys, _S_DROP, d.channels) < rate[:, None]
    )
    return {"keep": ~drop}


def _check_jitter(spec) -> None:
    if spec.brightness < 0 or not 0 <= spec.contrast < 1:
        raise ValueError(
            f"need brightness >= 0 and 0 <= contrast < 1, got {spec.brightness}, {spec.contrast}"
        )


def _check_dropout(spec) -> None:
    if not 0.0 <= spec.channel_dropout_rate <= 1.0:
        raise ValueError(f"channel_dropout_rate must be in [0, 1], got {spec.channel_dropout_rate}")


def _torch_step(x, y, ctx):
    params = ctx.params
    a, b, s = ctx.backend.coefficients(params)
    z = noise_field(params, params.out_hw, device=x.device)
    if z is None and is_identity(a, b):
        return x, y
    t = stage(x.device, a=a, b=b, s=s)
    a, b, s = (t[k][:, :, None, None] for k in "abs")
    out = torch.addcmul(b, x.float(), a)
    return (out if z is None else out.addcmul_(z, s)), y


def _plan(x, ctx):
    a, b, _ = ctx.backend.coefficients(ctx.params)
    affine, noisy = not is_identity(a, b), bool(np.any(ctx.params.noise_scale > 0))
    return (affine, noisy) if affine or noisy else None


def _feeds(x, ctx, variant):
    affine, noisy = variant
    a, b, s = ctx.backend.coefficients(ctx.params)
    per_channel = ctx.backend.per_channel
    feeds = {"a": per_channel(a), "b": per_channel(b)} if affine else {}
    if noisy:
        z = noise_field(ctx.params, ctx.params.out_hw, device=x.device)
        feeds.update(z=ctx.backend.in_layout(z), s=per_channel(s))
    return feeds


def _graph(x, variant, g):
    affine, noisy = variant
    if affine:
        x = x * g.arg("a") + g.arg("b")
    if noisy:
        x = x + g.source("z", device=g.place, layout=g.layout, no_copy=True) * g.arg("s")
    return x


_NOISE_DOC = "range of the noise std, relative to each channel's manifest std."
OPS = (
    Op(
        "noise",
        (
            Field("noise", "float", 0.0, "probability of additive Gaussian noise.", "prob"),
            Field("noise_std", "tuple[float, float]", (0.0, 0.25), _NOISE_DOC, "pair"),
        ),
        doc="`x' = x + s * std_c * z`, `s ~ U(noise_std)` per row, `z ~ N(0, 1)`",
        slots=(_S_NOISE_ON, _S_NOISE, _S_NOISE_SEED),
        sample=_noise,
        trivial=5,
        validate=lambda spec: check_range("noise_std", spec.noise_std, 0.0, math.inf),
        examples={"noise": {"noise": 0.8, "noise_std": (0.1, 0.5)}},
    ),
    Op(
        "jitter",
        (
            Field("jitter", "float", 0.0, "probability of FroFA brightness/contrast.", "prob"),
            Field("brightness", "float", 0.0, "max brightness shift, in channel stds."),
            Field("contrast", "float", 0.0, "max relative contrast change around the mean."),
            Field("jitter_per_channel", "bool", True, "draw jitter per channel (FroFA c^2)."),
        ),
        doc="`x' = (x - mean_c) * k + mean_c + b * std_c`, `k ~ U(1 ± contrast)`, "
        "`b ~ U(± brightness)`, per channel or shared",
        slots=(_S_JIT_ON, _S_CONTRAST, _S_BRIGHT),
        sample=_jitter,
        trivial=6,
        validate=_check_jitter,
        examples={
            "jitter": {"jitter": 0.8, "brightness": 0.5, "contrast": 0.3},
            "jitter_global": {
                "jitter": 1.0,
                "brightness": 0.5,
                "contrast": 0.3,
                "jitter_per_channel": False,
            },
        },
    ),
    Op(
        "normalize",
        (Field("normalize", "bool", False, "normalise by the manifest mean/std at the end."),),
        doc="`(x - mean_c) / std_c` with the manifest statistics",
        idle=lambda spec: not spec.normalize,
        examples={"normalize": {"normalize": True, "noise": 1.0}},
    ),
    Op(
        "channel_dropout",
        (
            Field("channel_dropout", "float", 0.0, "probability of channel dropout.", "prob"),
            Field("channel_dropout_rate", "float", 0.1, "fraction of channels zeroed."),
        ),
        doc="each channel zeroed with probability `channel_dropout_rate` (no rescaling)",
        slots=(_S_DROP_ON, _S_DROP),
        sample=_dropout,
        trivial=7,
        validate=_check_dropout,
        examples={"channel_dropout": {"channel_dropout": 0.8, "channel_dropout_rate": 0.3}},
    ),
)
STEPS = (Step("channel", 40, _torch_step, DaliStep(_plan, _feeds, _graph)),)
