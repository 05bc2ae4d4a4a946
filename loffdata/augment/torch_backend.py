"""Torch backend: the reference semantics, batched (no loop over samples), CPU or GPU.

Steps, in order (the DALI backend follows the same order):

1. pooling (integer factor: ``avg_pool2d``; adaptive: ``adaptive_avg_pool2d``), same for all rows;
2. repeat each sample ``views`` times (views adjacent);
3. random resized crop + flips: ``grid_sample(bilinear, align_corners=False,
   padding_mode="border")`` over per-row affine grids of the crop box (a flipped axis
   has a reversed box); when no row is cropped or resized, flips are plain ``torch.flip``;
4. jitter, noise, normalisation, channel dropout: ``x * A + B + z * S`` (see
   :mod:`loffdata.augment.channel`);
5. rot90 (``torch.rot90`` per group of equal k);
6. mixup / cutmix with the batch partner, labels to soft labels;
7. cast to the output dtype.

A step that does nothing for a batch is skipped, and the maps are cast to float32 only
before the first step that computes (resampling, the fused multiply-add, mixing); flips and
rot90 are exact in any dtype. The identity preset therefore costs nothing. Per-batch
parameter arrays reach the device through :func:`~loffdata.augment.staging.stage` (one
pinned ``non_blocking`` copy per step), so the host never waits for the GPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from loffdata.augment.channel import channel_coefficients, channel_stats, is_identity, noise_field
from loffdata.augment.params import Params
from loffdata.augment.spec import AugmentSpec
from loffdata.augment.staging import stage

__all__ = [
    "TorchBackend",
    "pool",
    "repeat_views",
    "spatial",
    "rot90",
    "mix",
    "finish",
    "prepare_labels",
    "check_labels",
]


def pool(x: torch.Tensor, spec: AugmentSpec) -> torch.Tensor:
    """Average-pool every map (integer factor or adaptive); identity when off."""
    if spec.pool_size is not None:
        return F.adaptive_avg_pool2d(x.float(), tuple(spec.pool_size))
    if spec.pool_factor > 1:
        return F.avg_pool2d(x.float(), spec.pool_factor)
    return x


def repeat_views(x: torch.Tensor, views: int) -> torch.Tensor:
    """Rows ``i * views + v`` = sample ``i``."""
    return x if views == 1 else x.repeat_interleave(views, dim=0)


def spatial(x: torch.Tensor, params: Params) -> torch.Tensor:
    """Crop box + flips resampled to ``params.out_hw`` (bilinear, float32 out); plain flips
    (any dtype) when nothing is resampled; ``x`` itself when nothing changes."""
    if not params.resamples():
        if not (params.hflip.any() or params.vflip.any()):
            return x
        t = stage(x.device, hf=params.hflip, vf=params.vflip)
        hf, vf = t["hf"][:, None, None, None], t["vf"][:, None, None, None]
        x = torch.where(hf, x.flip(-1), x) if params.hflip.any() else x
        return torch.where(vf, x.flip(-2), x) if params.vflip.any() else x
    x = x.float()
    start, end = (torch.as_tensor(a, dtype=torch.float64) for a in params.roi())
    gh, gw = params.grid
    theta = torch.zeros(params.rows, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = (end[:, 1] - start[:, 1]) / gw
    theta[:, 0, 2] = (start[:, 1] + end[:, 1]) / gw - 1
    theta[:, 1, 1] = (end[:, 0] - start[:, 0]) / gh
    theta[:, 1, 2] = (start[:, 0] + end[:, 0]) / gh - 1
    size = (params.rows, x.shape[1], *params.out_hw)
    grid = stage(x.device, g=F.affine_grid(theta, size, align_corners=False).float().numpy())["g"]
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


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


def mix(
    x: torch.Tensor, y: torch.Tensor | None, params: Params, *, num_classes: int | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mixup/cutmix each row with ``mix_partner``; labels become soft [R, num_classes]."""
    if num_classes is None:
        return x, y
    dev = x.device
    t = stage(
        dev,
        partner=params.mix_partner,
        lam=params.mix_lam,
        mode=params.mix_mode,
        box=params.cut_box,
    )
    partner, lam = t["partner"], t["lam"]
    if params.mix_mode.any():
        x = x.float()
        x = _mix_maps(x, x[partner], t)
    if y is None:
        return x, None
    check_labels(y, num_classes)
    classes = torch.arange(num_classes, device=dev)
    onehot = (y.to(dev, torch.int64)[:, None] == classes).float()  # no device-side assert
    return x, onehot * lam[:, None] + onehot[partner] * (1 - lam[:, None])


def check_labels(y: torch.Tensor, num_classes: int) -> None:
    """Labels on the host must lie in ``[0, num_classes)`` before they become soft labels.

    Unlabelled samples (label -1) cannot be mixed. Labels already on a GPU are not read
    back (that would make the host wait); :class:`~loffdata.loader.LoffLoader` checks the
    host copy of every batch before it reaches the device step.

    Raises:
        ValueError: a label is negative (unlabelled) or not below ``num_classes``.
    """
    if y.device.type != "cpu" or getattr(y, "loffdata_on_device", False) or y.numel() == 0:
        return  # (``loffdata_on_device``: a tensor on the loader's CUDA stand-in)
    bad = (y < 0) | (y >= num_classes)
    if bool(bad.any()):
        unlabelled = int((y < 0).sum())
        raise ValueError(
            f"mixup/cutmix need a label in [0, {num_classes}) for every sample; this batch has "
            f"{unlabelled} unlabelled (label -1) and {int(bad.sum()) - unlabelled} out-of-range labels"
        )


def _mix_maps(x: torch.Tensor, xp: torch.Tensor, t: dict[str, torch.Tensor]) -> torch.Tensor:
    dev, lam, mode = x.device, t["lam"], t["mode"]
    w = torch.where(mode == 1, lam, torch.ones_like(lam))[:, None, None, None]
    out = x * w + xp * (1 - w)
    box = t["box"][:, :, None, None]
    yy = torch.arange(x.shape[-2], device=dev)[None, :, None]
    xx = torch.arange(x.shape[-1], device=dev)[None, None, :]
    inside = (yy >= box[:, 0]) & (yy < box[:, 2]) & (xx >= box[:, 1]) & (xx < box[:, 3])
    return torch.where(inside[:, None], xp, out)


def finish(x: torch.Tensor, dtype: torch.dtype, spec: AugmentSpec) -> torch.Tensor:
    """Cast to the spec's ``out_dtype`` or back to the input dtype."""
    target = getattr(torch, spec.out_dtype) if spec.out_dtype else dtype
    return x.to(target)


def prepare_labels(y: torch.Tensor | None, views: int, rows: int) -> torch.Tensor | None:
    """Check labels and repeat them per view."""
    if y is None:
        return None
    if y.ndim != 1 or y.shape[0] * views != rows:
        raise ValueError(
            f"labels must be 1-D with one entry per sample, got shape {tuple(y.shape)}"
        )
    return y.repeat_interleave(views) if views > 1 else y


class TorchBackend:
    """Applies :class:`Params` with batched torch ops (the reference semantics).

    Args:
        spec: the augmentation spec the params were drawn for.
        mean: manifest per-channel mean, or None (zeros).
        std: manifest per-channel std, or None (ones: noise std is then absolute).
    """

    name = "torch"

    def __init__(
        self,
        spec: AugmentSpec,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        self.spec = spec
        self.mean, self.std = mean, std
        self._stats: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def coefficients(self, params: Params) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The fused ``(A, B, S)`` per-channel coefficients for ``params``."""
        c = params.in_shape[0]
        if c not in self._stats:  # checked and floored once per channel count
            self._stats[c] = (
                channel_stats(self.mean, c, default=0.0, name="mean"),
                channel_stats(self.std, c, default=1.0, name="std"),
            )
        mean, std = self._stats[c]
        return channel_coefficients(params, mean=mean, std=std, normalize=self.spec.normalize)

    def apply(self, x: torch.Tensor, y: torch.Tensor | None, params: Params):
        """Augment ``x`` [N, C, H, W] (and labels ``y`` [N]) with ``params``."""
        dtype = x.dtype
        x = repeat_views(pool(x, self.spec), self.spec.views)
        x = spatial(x, params)
        x = self._channels(x, params)
        x = rot90(x, params)
        y = prepare_labels(y, self.spec.views, params.rows)
        x, y = mix(x, y, params, num_classes=self.spec.num_classes if self.spec.mixing else None)
        return finish(x, dtype, self.spec), y

    def _channels(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        a, b, s = self.coefficients(params)
        z = noise_field(params, params.out_hw, device=x.device)
        if z is None and is_identity(a, b):
            return x
        t = stage(x.device, a=a, b=b, s=s)
        a, b, s = (t[k][:, :, None, None] for k in "abs")
        out = torch.addcmul(b, x.float(), a)
        return out if z is None else out.addcmul_(z, s)
