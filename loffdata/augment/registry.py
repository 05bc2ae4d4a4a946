"""The op registry: every augmentation op and backend step, declared once, found here.

Each module of :mod:`loffdata.augment.ops` declares its ops (spec fields, sampler, docs
line, examples) and its steps (torch implementation, DALI implementation or ``None`` for
torch only). This module imports them all, checks that names, fields and random-number
slots are unique, and offers them in one order:

* :data:`OPS` -- in the modules' order (alphabetical), each module's ops as declared;
* :data:`STEPS` -- by ``Step.order``: the order both backends apply them;
* :data:`TRIVIAL_OPS` -- ``"identity"`` plus the ops with a TrivialAugment rank, by rank;
* :data:`EXAMPLES` -- every op's named example specs (tests and benchmarks read them).

A new op is one new module under ``loffdata/augment/ops/``; ``python tools/spec_fields.py
--write`` then writes its fields into ``AugmentSpec``'s class body (for type checkers).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from loffdata.augment import ops as _ops_package
from loffdata.augment.opkit import Field, Op, Step

__all__ = ["OPS", "STEPS", "TRIVIAL_OPS", "EXAMPLES", "FIELDS", "op"]

#: examples of the spec-wide modes (not one op's)
_MODE_EXAMPLES = {
    "trivial": {
        "trivial": True,
        "brightness": 0.5,
        "channel_dropout_rate": 0.5,
        "noise_std": (0, 0.5),
    },
}


def _discover() -> tuple[tuple[Op, ...], tuple[Step, ...]]:
    ops: list[Op] = []
    steps: list[Step] = []
    for info in sorted(pkgutil.iter_modules(_ops_package.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{_ops_package.__name__}.{info.name}")
        ops.extend(getattr(module, "OPS", ()))
        steps.extend(getattr(module, "STEPS", ()))
    _check_unique("op", [o.name for o in ops])
    _check_unique("step", [s.name for s in steps])
    _check_unique("step order", [s.order for s in steps])
    _check_unique("field", [f.name for o in ops for f in o.fields])
    _check_unique("random-number slot", [slot for o in ops for slot in o.slots])
    _check_unique("TrivialAugment rank", [o.trivial for o in ops if o.trivial is not None])
    return tuple(ops), tuple(sorted(steps, key=lambda s: s.order))


def _check_unique(what: str, values: list) -> None:
    seen = {v for v in values if values.count(v) > 1}
    if seen:
        raise RuntimeError(f"augmentation registry: {what} declared twice: {sorted(seen)}")


OPS, STEPS = _discover()
TRIVIAL_OPS: tuple[str, ...] = ("identity",) + tuple(
    o.name for o in sorted((o for o in OPS if o.trivial is not None), key=lambda o: o.trivial)
)
FIELDS: tuple[Field, ...] = tuple(f for o in OPS for f in o.fields)
EXAMPLES: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {name: ex for o in OPS for name, ex in o.examples.items()} | _MODE_EXAMPLES
)


def op(name: str) -> Op:
    """The registered op called ``name``."""
    for o in OPS:
        if o.name == name:
            return o
    raise KeyError(f"no augmentation op {name!r}; registered: {[o.name for o in OPS]}")
