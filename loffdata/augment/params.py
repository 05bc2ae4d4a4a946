"""Host-side sampler: (spec, seed, epoch, sample indices) -> :class:`Params` of numpy arrays.

Per-row parameters (flips, crop box, rot90 k, jitter, noise scale, dropout mask) are
counter-based draws keyed by ``(seed, epoch, global index, view, slot)`` (see
:mod:`loffdata.augment.rng`): a sample's parameters do not depend on the batch it is
in, on the batch size, or on the number of workers/ranks. Batch-level parameters
(mixup/cutmix partner, weight and box, and the seed of the Gaussian noise field) are
keyed by ``(seed, epoch, ordered batch indices)``.

Rows are ``N * views`` long, views of one sample adjacent: row ``i * views + v``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loffdata.augment import rng
from loffdata.augment.spec import TRIVIAL_OPS, AugmentSpec

__all__ = ["Params", "sample_params", "grid_after_pool"]

_ATTEMPTS = 10  # random-resized-crop tries per row before falling back to the full map
# slots: one per kind of draw, so draws never share random numbers
_S_TRIVIAL, _S_MAG, _S_HFLIP, _S_VFLIP, _S_ROT_ON, _S_ROT_K = 1, 2, 3, 4, 5, 6
_S_CROP_ON, _S_AREA, _S_RATIO, _S_CX, _S_CY, _S_NOISE_ON, _S_NOISE = 7, 8, 9, 10, 11, 12, 13
_S_JIT_ON, _S_CONTRAST, _S_BRIGHT, _S_DROP_ON, _S_DROP = 14, 15, 16, 17, 18


@dataclass(frozen=True)
class Params:
    """Every random parameter of one augmented batch, as numpy arrays (``R = N * views`` rows).

    Attributes:
        seed: sampler seed.
        epoch: epoch the parameters were drawn for.
        indices: [R] global sample index of each row.
        views: [R] view number of each row.
        in_shape: (C, H, W) of the input maps.
        grid: (h, w) after pooling (the crop's source grid).
        out_hw: (h', w') of the output grid.
        hflip: [R] bool, flip along W.
        vflip: [R] bool, flip along H.
        box: [R, 4] float64 crop box (y0, x0, y1, x1) in source-grid pixel units (edges).
        rot_k: [R] int64, number of counter-clockwise 90-degree turns (as ``torch.rot90``).
        contrast: [R, C] float32 contrast factor (1 = unchanged).
        brightness: [R, C] float32 brightness shift in channel-std units.
        noise_scale: [R] float32 noise std relative to the channel std (0 = no noise).
        keep: [R, C] bool, False where channel dropout zeroes a channel.
        mix_mode: [R] int8, 0 none, 1 mixup, 2 cutmix.
        mix_partner: [R] int64 row whose map and label are mixed in.
        mix_lam: [R] float32 weight of the row's own map/label.
        cut_box: [R, 4] int64 cutmix box (y0, x0, y1, x1) on the output grid.
        noise_seed: seed of the torch generator for the Gaussian noise field.
    """

    seed: int
    epoch: int
    indices: np.ndarray
    views: np.ndarray
    in_shape: tuple[int, int, int]
    grid: tuple[int, int]
    out_hw: tuple[int, int]
    hflip: np.ndarray
    vflip: np.ndarray
    box: np.ndarray
    rot_k: np.ndarray
    contrast: np.ndarray
    brightness: np.ndarray
    noise_scale: np.ndarray
    keep: np.ndarray
    mix_mode: np.ndarray
    mix_partner: np.ndarray
    mix_lam: np.ndarray
    cut_box: np.ndarray
    noise_seed: int

    @property
    def rows(self) -> int:
        """Number of output rows (samples x views)."""
        return int(self.indices.shape[0])

    def roi(self) -> tuple[np.ndarray, np.ndarray]:
        """ROI start/end [R, 2] float32 in (y, x) order; a flipped axis has start > end."""
        y0, x0, y1, x1 = (self.box[:, i] for i in range(4))
        ys = np.where(self.vflip, y1, y0)
        ye = np.where(self.vflip, y0, y1)
        xs = np.where(self.hflip, x1, x0)
        xe = np.where(self.hflip, x0, x1)
        return np.stack([ys, xs], 1).astype(np.float32), np.stack([ye, xe], 1).astype(np.float32)

    def resamples(self) -> bool:
        """Whether any row needs bilinear resampling (a crop or a grid change)."""
        full = np.array([0.0, 0.0, self.grid[0], self.grid[1]])
        return self.out_hw != self.grid or not np.all(self.box == full)


def grid_after_pool(spec: AugmentSpec, hw: tuple[int, int]) -> tuple[int, int]:
    """The (h, w) grid after the spec's pooling step."""
    if spec.pool_size is not None:
        return (int(spec.pool_size[0]), int(spec.pool_size[1]))
    k = spec.pool_factor
    if k > min(hw):
        raise ValueError(f"pool_factor {k} larger than the feature grid {hw}")
    return (hw[0] // k, hw[1] // k)


def sample_params(
    spec: AugmentSpec, *, seed: int, epoch: int, indices: np.ndarray, shape: tuple[int, int, int]
) -> Params:
    """Draw every parameter for a batch of samples.

    Args:
        spec: what to do.
        seed: run seed.
        epoch: epoch number.
        indices: [N] global sample indices of the batch, in batch order.
        shape: (C, H, W) of one input map.

    Returns:
        The batch's :class:`Params` (``N * spec.views`` rows).
    """
    idx = _as_indices(indices)
    c, h, w = (int(s) for s in shape)
    grid = grid_after_pool(spec, (h, w))
    out_hw = tuple(spec.out_size) if spec.out_size is not None else grid
    rows_idx = np.repeat(idx, spec.views)
    views = np.tile(np.arange(spec.views, dtype=np.int64), idx.size)
    keys = rng.sample_keys(seed, epoch, rows_idx, views)
    on, mag = _switches(spec, keys)
    mix = _mixing(spec, seed, epoch, idx, out_hw)
    return Params(
        seed=seed,
        epoch=epoch,
        indices=rows_idx,
        views=views,
        in_shape=(c, h, w),
        grid=grid,
        out_hw=out_hw,
        hflip=on["hflip"],
        vflip=on["vflip"],
        box=_crop_boxes(spec, keys, on["crop"], mag, grid),
        rot_k=_rot_k(keys, on["rot90"], out_hw),
        **_channel_params(spec, keys, on, mag, c),
        **mix,
    )


def _as_indices(indices: np.ndarray) -> np.ndarray:
    if hasattr(indices, "detach"):  # torch tensor
        indices = indices.detach().cpu().numpy()
    idx = np.asarray(indices)
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(
            f"indices must be a 1-D integer array, got shape {idx.shape} dtype {idx.dtype}"
        )
    return idx.astype(np.int64)


def _switches(spec: AugmentSpec, keys: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-row on/off of each op and the magnitude multiplier (1, or TrivialAugment's draw)."""
    ops = [op for op in TRIVIAL_OPS if op != "identity"]
    if spec.trivial:
        choice = np.floor(rng.uniform(keys, _S_TRIVIAL) * len(spec.trivial_ops)).astype(np.int64)
        picked = np.asarray(spec.trivial_ops)[choice]
        return {op: picked == op for op in ops}, rng.uniform(keys, _S_MAG)
    slots = dict(
        zip(ops, (_S_HFLIP, _S_VFLIP, _S_ROT_ON, _S_CROP_ON, _S_NOISE_ON, _S_JIT_ON, _S_DROP_ON))
    )
    on = {op: rng.uniform(keys, slots[op]) < getattr(spec, op) for op in ops}
    return on, np.ones(keys.shape[0])


def _rot_k(keys: np.ndarray, on: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    if out_hw[0] == out_hw[1]:
        k = 1 + np.floor(rng.uniform(keys, _S_ROT_K) * 3).astype(np.int64)
    else:  # odd turns would change the grid shape inside a batch
        k = np.full(keys.shape[0], 2, dtype=np.int64)
    return np.where(on, k, 0)


def _crop_boxes(
    spec: AugmentSpec, keys: np.ndarray, on: np.ndarray, mag: np.ndarray, grid: tuple[int, int]
) -> np.ndarray:
    """Random-resized-crop boxes (torchvision's rule, continuous coordinates, 10 tries)."""
    gh, gw = grid
    lo, hi = spec.crop_scale
    if spec.trivial:  # magnitude m -> area 1 - m * (1 - lo)
        lo = hi = 1.0 - mag * (1.0 - lo)
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
    ok = on & valid[pick, first]
    cw, ch = np.where(ok, cw[pick, first], gw), np.where(ok, ch[pick, first], gh)
    x0 = rng.uniform(keys, _S_CX) * (gw - cw)
    y0 = rng.uniform(keys, _S_CY) * (gh - ch)
    return np.stack([y0, x0, y0 + ch, x0 + cw], axis=1)


def _channel_params(
    spec: AugmentSpec, keys: np.ndarray, on: dict[str, np.ndarray], mag: np.ndarray, c: int
) -> dict[str, np.ndarray]:
    """Jitter factors, noise scale and channel-dropout mask."""
    width = c if spec.jitter_per_channel else 1
    jit = (on["jitter"] * mag)[:, None]
    contrast = 1.0 + jit * spec.contrast * (2 * rng.uniform(keys, _S_CONTRAST, width) - 1)
    bright = jit * spec.brightness * (2 * rng.uniform(keys, _S_BRIGHT, width) - 1)
    lo, hi = spec.noise_std
    scale = hi * mag if spec.trivial else lo + rng.uniform(keys, _S_NOISE) * (hi - lo)
    rate = spec.channel_dropout_rate * mag
    drop = on["channel_dropout"][:, None] & (rng.uniform(keys, _S_DROP, c) < rate[:, None])
    shape = (keys.shape[0], c)
    return {
        "contrast": np.broadcast_to(contrast, shape).astype(np.float32),
        "brightness": np.broadcast_to(bright, shape).astype(np.float32),
        "noise_scale": np.where(on["noise"], scale, 0.0).astype(np.float32),
        "keep": ~drop,
    }


def _mixing(
    spec: AugmentSpec, seed: int, epoch: int, idx: np.ndarray, out_hw: tuple[int, int]
) -> dict:
    """Batch-level draws: mixup/cutmix partner, weight, box; the noise-field seed."""
    key = rng.mix(np.uint64(rng.batch_key(seed, epoch, idx)), spec.views)
    gen = np.random.default_rng(int(key))
    r = idx.size * spec.views
    partner = gen.permutation(r).astype(np.int64)
    u = gen.random(r)
    mode = np.where(u < spec.mixup, 1, np.where(u < spec.mixup + spec.cutmix, 2, 0)).astype(np.int8)
    lam_mix = gen.beta(spec.mixup_alpha, spec.mixup_alpha, r)
    cut_box, lam_cut = _cut_boxes(gen, gen.beta(spec.cutmix_alpha, spec.cutmix_alpha, r), out_hw)
    lam = np.select([mode == 1, mode == 2], [lam_mix, lam_cut], 1.0).astype(np.float32)
    cut_box = np.where((mode == 2)[:, None], cut_box, 0)
    return {
        "mix_mode": mode,
        "mix_partner": partner,
        "mix_lam": lam,
        "cut_box": cut_box,
        "noise_seed": int(gen.integers(0, 2**62)),
    }


def _cut_boxes(
    gen: np.random.Generator, lam: np.ndarray, hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """CutMix boxes of area ~(1 - lam), clipped to the grid; lam corrected to the true area."""
    h, w = hw
    rat = np.sqrt(1.0 - lam)
    ch, cw = (h * rat).astype(np.int64), (w * rat).astype(np.int64)
    cy, cx = gen.integers(0, h, lam.size), gen.integers(0, w, lam.size)
    y0, y1 = np.clip(cy - ch // 2, 0, h), np.clip(cy + ch - ch // 2, 0, h)
    x0, x1 = np.clip(cx - cw // 2, 0, w), np.clip(cx + cw - cw // 2, 0, w)
    lam_true = 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)
    return np.stack([y0, x0, y1, x1], axis=1), lam_true
