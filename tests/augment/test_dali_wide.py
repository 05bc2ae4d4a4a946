"""DALI on wide maps: the resize step's rule, and one pipeline whatever the batch size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from loffdata.augment import Augmenter, AugmentSpec

pytest.importorskip("nvidia.dali")
pytestmark = pytest.mark.dali

from loffdata.augment.dali_backend import WIDE_CHANNELS, DaliBackend  # noqa: E402

SPEC = AugmentSpec.from_dict({"preset": "loffta", "crop": 1.0, "hflip": 0.5, "vflip": 0.5})


def _pair(c: int, **dali):
    kw = {"seed": 2, "mean": np.linspace(-0.5, 0.5, c), "std": np.linspace(0.5, 2.0, c)}
    ref, aug = Augmenter(SPEC, backend="torch", **kw), Augmenter(SPEC, backend="dali", **kw)
    if dali:
        aug.backend = DaliBackend(SPEC, mean=kw["mean"], std=kw["std"], **dali)
    return ref, aug


def _check(ref, aug, x, indices):
    params = ref.params(indices, epoch=1, shape=tuple(x.shape[1:]))
    want, _ = ref.apply(x, None, params)
    got, _ = aug.apply(x, None, params)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("resize", ["auto", "dali"])
def test_wide_maps_resize_by_the_rule_and_match_torch(features, resize):
    c = WIDE_CHANNELS + 8
    ref, aug = _pair(c, resize=resize)
    _check(ref, aug, features(4, c, 6, 6), np.arange(4))
    [key] = aug.backend._pipes  # crop and flips in DALI only when asked: the key says which steps
    assert ("spatial" in dict(key[3])) is (resize == "dali")


def test_narrow_maps_resize_in_dali(features):
    ref, aug = _pair(8)
    _check(ref, aug, features(4, 8, 6, 6), np.arange(4))
    assert ["spatial" in dict(k[3]) for k in aug.backend._pipes] == [True]
    assert not aug.backend.resizes_in_torch(8)


def test_last_partial_batch_runs_on_the_same_pipeline(features):
    ref, aug = _pair(8)
    _check(ref, aug, features(6, 8, 6, 6), np.arange(6))
    ((pipe, size),) = aug.backend._pipes.values()
    _check(ref, aug, features(2, 8, 6, 6, seed=1), np.arange(6, 8))  # the epoch's short last batch
    assert list(aug.backend._pipes.values()) == [(pipe, size)] and size == 6
