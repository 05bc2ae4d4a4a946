"""The pieces an augmentation op is declared with (see :mod:`loffdata.augment.registry`).

An op module under ``loffdata/augment/ops/`` declares, once:

* :class:`Op` -- its spec fields (:class:`Field`: name, type, default, doc line), its
  probability switch and random-number slots, its host-side sampler (spec, :class:`Draw`)
  -> named parameter arrays, its TrivialAugment rank and its docs line;
* :class:`Step` -- where it runs (``order`` among the steps), its torch implementation
  ``(x, y, ctx) -> (x, y)`` and its DALI implementation (:class:`DaliStep`) or ``None`` for
  "torch only" (the DALI backend then runs the torch implementation at that point).

Nothing here imports DALI: a :class:`DaliStep` receives DALI's ``fn``/``types`` through
the graph context the DALI backend hands it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Field", "Op", "Step", "DaliStep", "Draw", "StepContext", "Params", "check_range"]


@dataclass(frozen=True)
class Field:
    """One :class:`~loffdata.augment.AugmentSpec` field.

    Attributes:
        name: field name (a keyword of ``AugmentSpec``).
        type: annotation, as a string (``"float"``, ``"tuple[float, float]"``).
        default: default value (immutable).
        doc: one line for the spec's docstring.
        kind: ``"prob"`` (checked to lie in [0, 1]), ``"pair"`` (lists become tuples) or
            ``"value"``.
    """

    name: str
    type: str
    default: Any
    doc: str
    kind: str = "value"


@dataclass(frozen=True)
class Op:
    """One augmentation op, declared once.

    Attributes:
        name: op name; when it has a probability field, that field has this name.
        fields: its spec fields.
        doc: what it does, one line (the docs table says the same).
        slots: the random-number slots its draws use (unique across ops); the first is
            the per-row on/off switch when the op has a probability.
        sample: ``(spec, draw) -> {param name: array}``, or ``None`` (nothing to draw).
        trivial: position in the default TrivialAugment op list, or ``None`` (not pickable).
        idle: ``spec -> bool``, whether the op changes nothing under ``spec``.
        validate: ``spec -> None``, raising ``ValueError`` on a bad value, or ``None``.
        examples: named spec-field dicts that exercise the op (the equivalence tests, the
            pinned-output test and the benchmark read them).
    """

    name: str
    fields: tuple[Field, ...]
    doc: str
    slots: tuple[int, ...] = ()
    sample: Callable[[Any, Draw], dict[str, np.ndarray]] | None = None
    trivial: int | None = None
    idle: Callable[[Any], bool] | None = None
    validate: Callable[[Any], None] | None = None
    examples: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def switch(self) -> bool:
        """Whether the op has a per-row probability (a field named like the op)."""
        return any(f.name == self.name and f.kind == "prob" for f in self.fields)


@dataclass(frozen=True)
class DaliStep:
    """A step's DALI implementation, run inside the backend's pipeline.

    Attributes:
        plan: ``(x, ctx) -> variant`` (hashable, part of the pipeline's cache key), or
            ``None``: not in the pipeline for this batch (the torch implementation runs).
        feeds: ``(x, ctx, variant) -> {input name: array}`` fed to the pipeline.
        graph: ``(node, variant, g) -> node``, adding the step to the pipeline graph;
            ``g`` gives ``fn``, ``types``, ``place``, ``source(name)`` and ``arg(name)``.
    """

    plan: Callable[[Any, StepContext], Hashable | None]
    feeds: Callable[[Any, StepContext, Any], dict[str, Any]]
    graph: Callable[[Any, Any, Any], Any]


@dataclass(frozen=True)
class Step:
    """One backend step; both backends run the steps in ``order``.

    Attributes:
        name: step name.
        order: position (steps run by increasing order).
        torch: ``(x, y, ctx) -> (x, y)``, the reference implementation (a no-op when the
            batch's params need nothing from it).
        dali: its DALI implementation, or ``None``: torch only.
    """

    name: str
    order: int
    torch: Callable[[Any, Any, StepContext], tuple[Any, Any]]
    dali: DaliStep | None = None


@dataclass(frozen=True)
class StepContext:
    """What a step sees besides the batch: params, spec, the backend and the input dtype."""

    params: Params
    spec: Any
    backend: Any
    dtype: Any


@dataclass(frozen=True)
class Draw:
    """What an op's sampler draws from (``R = N * views`` rows).

    Attributes:
        keys: [R] uint64 per-row keys of (seed, epoch, global index, view).
        on: op name -> [R] bool, whether the op fires on the row.
        mag: [R] magnitude multiplier (1, or TrivialAugment's draw).
        seed: run seed.
        epoch: epoch.
        indices: [N] global sample indices of the batch, in batch order.
        views: views per sample.
        channels: C of the input maps.
        grid: (h, w) after pooling.
        out_hw: (h', w') of the output grid.
    """

    keys: np.ndarray
    on: Mapping[str, np.ndarray]
    mag: np.ndarray
    seed: int
    epoch: int
    indices: np.ndarray
    views: int
    channels: int
    grid: tuple[int, int]
    out_hw: tuple[int, int]


@dataclass(frozen=True)
class Params:
    """Every random parameter of one augmented batch, as numpy arrays (``R = N * views`` rows).

    The arrays each op's sampler draws (``hflip``, ``box``, ``mix_partner`` ...; see each
    op's ``sample`` under :mod:`loffdata.augment.ops`, or ``sorted(params.arrays)``) are
    attributes: ``params.hflip``.

    Attributes:
        seed: sampler seed.
        epoch: epoch the parameters were drawn for.
        indices: [R] global sample index of each row.
        views: [R] view number of each row.
        in_shape: (C, H, W) of the input maps.
        grid: (h, w) after pooling (the crop's source grid).
        out_hw: (h', w') of the output grid.
        arrays: param name -> array, drawn by the ops' samplers.
    """

    seed: int
    epoch: int
    indices: np.ndarray
    views: np.ndarray
    in_shape: tuple[int, int, int]
    grid: tuple[int, int]
    out_hw: tuple[int, int]
    arrays: Mapping[str, np.ndarray]

    def __getattr__(self, name: str) -> np.ndarray:
        arrays = self.__dict__.get("arrays", {})
        if name in arrays:
            return arrays[name]
        raise AttributeError(f"Params has no parameter {name!r}; drawn: {sorted(arrays)}")

    @property
    def rows(self) -> int:
        """Number of output rows (samples x views)."""
        return int(self.indices.shape[0])

    def replace(self, **arrays: np.ndarray) -> Params:
        """A copy with the named parameter arrays replaced (e.g. a hand-set crop box)."""
        unknown = sorted(set(arrays) - set(self.arrays))
        if unknown:
            raise ValueError(f"Params has no parameters {unknown}; drawn: {sorted(self.arrays)}")
        return dataclasses.replace(self, arrays={**self.arrays, **arrays})


def check_range(
    name: str, rng: tuple[float, float], lo: float, hi: float, *, open_low: bool = False
) -> None:
    """Raise ``ValueError`` unless ``rng`` is an ordered pair within ``[lo, hi]``."""
    ok = (
        len(rng) == 2
        and rng[0] <= rng[1]
        and rng[1] <= hi
        and (rng[0] > lo if open_low else rng[0] >= lo)
    )
    if not ok:
        raise ValueError(
            f"AugmentSpec.{name} must be an ordered (low, high) pair within [{lo}, {hi}], "
            f"got {rng!r}"
        )
