"""Host-side sampler: (spec, seed, epoch, sample indices) -> :class:`Params` of numpy arrays.

Per-row parameters (flips, crop box, rot90 k, jitter, noise scale and noise seed, dropout
mask, cutout box) are counter-based draws keyed by ``(seed, epoch, global index, view,
slot)`` (see :mod:`loffdata.augment.rng`): a sample's parameters do not depend on the
batch it is in, on the batch size, or on the number of workers/ranks. Mixup/cutmix
partners, weights and boxes are keyed by ``(seed, epoch, the ordered indices of the
sample's group of AugmentSpec.mix_group)`` (:mod:`loffdata.augment.ops.mixing`).

Each op of :mod:`loffdata.augment.registry` draws its own arrays (``Op.sample``); this
module draws what they share: the per-row keys, the on/off switches and TrivialAugment's
choice and magnitude. Rows are ``N * views`` long, views of one sample adjacent: row
``i * views + v``.
"""

from __future__ import annotations

import numpy as np

from loffdata.augment import rng
from loffdata.augment.opkit import Draw, Params
from loffdata.augment.registry import OPS
from loffdata.augment.spec import AugmentSpec

__all__ = ["Params", "sample_params", "grid_after_pool"]

_S_TRIVIAL, _S_MAG = 1, 2  # TrivialAugment's choice and magnitude (ops use slots from 3 on)


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
    draw = Draw(keys, on, mag, seed, epoch, idx, spec.views, c, grid, out_hw)
    arrays: dict[str, np.ndarray] = {}
    for op in OPS:
        if op.sample is not None:
            arrays.update(op.sample(spec, draw))
    return Params(seed, epoch, rows_idx, views, (c, h, w), grid, out_hw, arrays)


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
    """Per-row on/off of each op and the magnitude multiplier (1, or TrivialAugment's draw).

    In TrivialAugment mode an op with a TrivialAugment rank fires exactly on the rows that
    picked it; the other ops keep their own probability."""
    switched = [op for op in OPS if op.switch and op.slots]
    on = {op.name: rng.uniform(keys, op.slots[0]) < getattr(spec, op.name) for op in switched}
    if not spec.trivial:
        return on, np.ones(keys.shape[0])
    choice = np.floor(rng.uniform(keys, _S_TRIVIAL) * len(spec.trivial_ops)).astype(np.int64)
    picked = np.asarray(spec.trivial_ops)[choice]
    on.update({op.name: picked == op.name for op in OPS if op.trivial is not None})
    return on, rng.uniform(keys, _S_MAG)
