"""Multi-scale variable-batch sampling: each batch its own grid, tokens per batch near constant.

After Apple's multi-scale samplers (CVNets), on cached feature maps: a batch at grid ``g``
is resized from the stored grid (adaptive average pooling down, as the augment backends'
``pool_size``; bilinear up) and holds about ``base * (G / g)**2`` samples, ``G`` the largest
grid, so ``samples * g**2`` stays near ``base * G**2``.

The loader reads fixed *chunks* (its ``batch_size``); a batch at grid ``g`` is ``n_g =
round(base_chunks * (G / g)**2)`` consecutive chunks (so the tokens of a batch are within
``1 / (2 n_g)`` of the target, relatively; exact where ``(G / g)**2 * base_chunks`` is an
integer). The schedule of an epoch, a list of ``(grid, chunks)``, is a pure function of
``(seed, epoch, chunks in the epoch)`` (:func:`schedule`), and the chunk count is the
loader's ``len()``, equal on every rank; so every rank gets the same number of batches, with
the same grid at each step, and ``len()`` is exact. The last batch takes the chunks left
(fewer tokens) unless ``drop_last``. Resumption: :meth:`MultiScaleLoader.state_dict` holds
the loader's state at a batch boundary and the batch index.

Curriculum (``curriculum_epochs = E``): in epoch ``e < E`` only the smallest
``ceil((e + 1) / E * len(grids))`` grids are drawn, so training starts coarse (cheap) and
grows to every grid; from epoch ``E`` on, all grids.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["MultiScaleConfig", "MultiScaleLoader", "allowed_grids", "resize_grid", "schedule"]

_SALT = 0x6D756C7469  # "multi": keeps these draws apart from the data order's


@dataclass(frozen=True)
class MultiScaleConfig:
    """Grid choice per batch.

    Attributes:
        grids: square grid sizes to draw from (e.g. ``(18, 14, 9)``).
        base_chunks: loader batches ("chunks") in a batch at the largest grid.
        seed: seed of the grid draws (with the epoch).
        curriculum_epochs: grow the grid set over this many epochs (``0``: no curriculum).
        drop_last: drop the chunks that do not fill a last batch (every batch then at the
            target token count, within rounding).
    """

    grids: tuple[int, ...] = (18, 14, 9)
    base_chunks: int = 4
    seed: int = 0
    curriculum_epochs: int = 0
    drop_last: bool = False

    def __post_init__(self) -> None:
        grids = tuple(int(g) for g in self.grids)
        if not grids or min(grids) < 1 or len(set(grids)) != len(grids):
            raise ValueError(f"grids must be distinct positive ints, got {self.grids!r}")
        object.__setattr__(self, "grids", tuple(sorted(grids)))
        if self.base_chunks < 1 or self.curriculum_epochs < 0:
            raise ValueError(
                f"need base_chunks >= 1, curriculum_epochs >= 0; got {self.base_chunks}, "
                f"{self.curriculum_epochs}"
            )

    def chunks(self, grid: int) -> int:
        """Chunks in a batch at ``grid``."""
        return max(1, round(self.base_chunks * (max(self.grids) / grid) ** 2))


def allowed_grids(config: MultiScaleConfig, epoch: int) -> tuple[int, ...]:
    """The grids drawn in ``epoch`` (all of them, or the curriculum's smallest ones)."""
    if not config.curriculum_epochs or epoch >= config.curriculum_epochs:
        return config.grids
    return config.grids[: math.ceil((epoch + 1) / config.curriculum_epochs * len(config.grids))]


def schedule(config: MultiScaleConfig, *, epoch: int, num_chunks: int) -> list[tuple[int, int]]:
    """The epoch's batches as ``(grid, chunks)``, covering ``num_chunks`` chunks in order.

    A pure function of its arguments (no rank, no worker count).
    """
    grids = allowed_grids(config, epoch)
    rng = np.random.default_rng([config.seed, epoch, _SALT])
    draws = rng.integers(0, len(grids), size=num_chunks)  # enough: every batch takes >= 1 chunk
    out, used = [], 0
    for d in draws:
        if used >= num_chunks:
            break
        grid = grids[int(d)]
        n = config.chunks(grid)
        if used + n > num_chunks:
            if config.drop_last:
                break
            n = num_chunks - used
        out.append((grid, n))
        used += n
    return out


def resize_grid(x: Any, grid: int) -> Any:
    """``(N, C, H, W)`` maps at ``grid x grid``: adaptive average pooling down, bilinear up."""
    import torch.nn.functional as F

    if tuple(x.shape[-2:]) == (grid, grid):
        return x
    if grid <= min(x.shape[-2:]):
        return F.adaptive_avg_pool2d(x.float(), (grid, grid)).to(x.dtype)
    return F.interpolate(x.float(), size=(grid, grid), mode="bilinear", align_corners=False).to(
        x.dtype
    )


class MultiScaleLoader:
    """Wraps a :class:`~loffdata.loader.LoffLoader` (its batches are the chunks); yields
    ``(features at the batch's grid, labels[, extras])`` batches of :func:`schedule`.

    ``set_epoch``, ``len()``, ``state_dict`` / ``load_state_dict`` as the loader's. State
    schema: ``{"version": 1, "epoch": int, "batch": batches of the epoch delivered,
    "position": the same (the loader's key), "loader": the wrapped loader's state at that batch
    boundary}``.
    """

    def __init__(self, loader: Any, config: MultiScaleConfig):
        self.loader, self.config = loader, config
        self.epoch, self._batch, self._resume = 0, 0, None

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self._batch, self._resume = int(epoch), 0, None
        self.loader.set_epoch(epoch)

    def plan(self) -> list[tuple[int, int]]:
        """This epoch's ``(grid, chunks)`` batches."""
        return schedule(self.config, epoch=self.epoch, num_chunks=len(self.loader))

    def __len__(self) -> int:
        return len(self.plan())

    def __iter__(self) -> Iterator[tuple]:

        plan, start = self.plan(), self._batch
        if self._resume is not None:
            self.loader.load_state_dict(self._resume)
            self._resume = None
        chunks = iter(self.loader)
        for b in range(start, len(plan)):
            grid, n = plan[b]
            parts = [next(chunks) for _ in range(n)]
            self._batch = b + 1
            yield _joined(parts, grid)
        self._batch = 0
        for _ in chunks:  # chunks dropped by drop_last: finish the loader's pass
            pass

    def __getattr__(self, name: str) -> Any:  # spec, similarity_search, close ...: the loader's
        if name == "loader":
            raise AttributeError(name)
        return getattr(self.loader, name)

    @property
    def manifest(self) -> Any:
        """The wrapped loader's manifest."""
        return self.loader.manifest

    @property
    def stats(self) -> Any:
        """The wrapped loader's :class:`~loffdata.loader.LoaderStats` (samples read)."""
        return self.loader.stats

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "epoch": self.epoch,
            "batch": self._batch,
            "position": self._batch,
            "loader": self.loader.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("version") != 1:
            raise ValueError(f"unsupported multi-scale state version {state.get('version')!r}")
        self.epoch, self._batch, self._resume = (
            int(state["epoch"]),
            int(state["batch"]),
            dict(state["loader"]),
        )


def _joined(parts: list[Any], grid: int) -> Any:
    """One batch of the chunks ``parts`` at ``grid``: a :class:`~loffdata.loader.batch.Batch`
    (or ``BatchWithExtras``) whose ``keys`` and ``indices`` are the chunks' in order."""
    import torch

    from loffdata.loader.batch import Batch, BatchWithExtras

    x = resize_grid(torch.cat([p[0] for p in parts]), grid)
    y = torch.cat([p[1] for p in parts])
    keys = [k for p in parts for k in getattr(p, "keys", ())]
    found = [getattr(p, "indices", None) for p in parts]
    indices = torch.cat(found) if all(i is not None for i in found) else None
    if len(parts[0]) > 2:
        extras = {k: torch.cat([p[2][k] for p in parts]) for k in parts[0][2]}
        return BatchWithExtras(x, y, extras, keys=keys, indices=indices)
    return Batch(x, y, keys=keys, indices=indices)
