import pytest

from loffdata.augment import PRESETS, AugmentSpec


def test_presets_and_overrides():
    spec = AugmentSpec.preset("loffta", views=2, out_size=(8, 8))
    assert spec.hflip == 0.5 and spec.crop == 1.0 and spec.noise > 0
    assert spec.views == 2 and spec.out_size == (8, 8)
    assert AugmentSpec.preset("none") == AugmentSpec()
    assert AugmentSpec.preset("frofa").jitter == 1.0
    assert set(PRESETS) >= {"loffta", "none", "frofa"}


def test_dict_round_trip_and_replace():
    spec = AugmentSpec.from_dict({"preset": "loffta", "crop_scale": [0.5, 1.0], "trivial": True})
    assert spec.crop_scale == (0.5, 1.0)
    assert AugmentSpec.from_dict(spec.to_dict()) == spec
    other = spec.replace(hflip=0.0)
    assert other.hflip == 0.0 and other.crop_scale == (0.5, 1.0) and spec.hflip == 0.5


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"hflip": 1.5}, "probability"),
        ({"bogus": 1}, "unknown augmentation fields"),
        ({"preset": "nope"}, "nope"),
        ({"mixup": 0.5}, "num_classes"),
        ({"crop_scale": (0.9, 0.1)}, "crop_scale"),
        ({"pool_factor": 2, "pool_size": (4, 4)}, "either"),
        ({"trivial_ops": ("hflip", "warp")}, "trivial_ops"),
        ({"views": 0}, "views"),
    ],
)
def test_invalid_specs_raise(bad, match):
    with pytest.raises((ValueError, KeyError), match=match):
        AugmentSpec.from_dict(bad)


def test_unknown_preset_name():
    with pytest.raises(ValueError, match="unknown augmentation preset"):
        AugmentSpec.preset("nope")


def test_the_class_body_declares_the_registry_fields_by_name_type_and_default():
    import dataclasses
    import typing

    from loffdata.augment.spec import _FIELDS

    declared = [(f.name, f.type, f.default) for f in dataclasses.fields(AugmentSpec)]
    assert declared == [(f.name, f.type, f.default) for f in _FIELDS]
    hints = typing.get_type_hints(AugmentSpec)  # what a type checker reads: resolvable types
    assert hints["hflip"] is float and hints["pool_size"] == (tuple[int, int] | None)


def test_the_fields_are_written_in_the_source_where_type_checkers_read_them():
    import ast
    import inspect

    from loffdata.augment import spec

    (cls,) = [
        n
        for n in ast.parse(inspect.getsource(spec)).body
        if getattr(n, "name", "") == "AugmentSpec"
    ]
    written = [n.target.id for n in cls.body if isinstance(n, ast.AnnAssign)]
    assert written == [f.name for f in spec._FIELDS]
