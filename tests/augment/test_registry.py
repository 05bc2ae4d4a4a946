"""The op registry: each op declared once, and everything else reads it."""

import dataclasses
import re
from pathlib import Path

import pytest

from loffdata.augment import AugmentSpec
from loffdata.augment.registry import EXAMPLES, FIELDS, OPS, STEPS, TRIVIAL_OPS, op

DOCS = Path(__file__).resolve().parents[2] / "docs/augmentations.md"


def test_spec_fields_are_the_registry_fields_plus_the_modes():
    names = [f.name for f in dataclasses.fields(AugmentSpec)]
    assert names[: len(FIELDS)] == [f.name for f in FIELDS]
    assert names[len(FIELDS) :] == ["trivial", "trivial_ops", "target_similarity"]
    assert AugmentSpec().to_dict()["hflip"] == op("hflip").fields[0].default


def test_steps_run_in_declared_order_and_trivial_ops_keep_their_order():
    assert [s.order for s in STEPS] == sorted(s.order for s in STEPS)
    assert [s.name for s in STEPS][:3] == ["pool", "views", "spatial"] and STEPS[-1].name == "cast"
    assert TRIVIAL_OPS[:8] == (
        "identity",
        "hflip",
        "vflip",
        "rot90",
        "crop",
        "noise",
        "jitter",
        "channel_dropout",
    )


def test_slots_are_unique_and_clear_of_the_shared_draws():
    slots = [s for o in OPS for s in o.slots]
    assert len(slots) == len(set(slots)) and min(slots) >= 3  # 1, 2: TrivialAugment's draws


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_example_is_a_valid_spec(name):
    assert not AugmentSpec.from_dict(EXAMPLES[name]).is_identity


@pytest.mark.parametrize("name", [o.name for o in OPS])
def test_every_op_is_documented_with_its_fields(name):
    table = DOCS.read_text()
    for f in op(name).fields:
        assert re.search(rf"`{f.name}=", table), f"docs/augmentations.md lacks `{f.name}=...`"


def test_unknown_op_names_the_registered_ones():
    with pytest.raises(KeyError, match="registered"):
        op("sharpen")
