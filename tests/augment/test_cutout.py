"""Cutout: one rectangle per row set to 0, keyed per sample, the rest of the map untouched."""

import numpy as np
import pytest
import torch

from loffdata.augment import Augmenter, AugmentSpec, sample_params

SPEC = AugmentSpec(cutout=0.7, cutout_size=(0.25, 0.5), hflip=0.5, jitter=1.0, brightness=0.3)


def test_only_the_box_changes_and_it_is_zero(features):
    x = features(16, 3, 8, 12)
    aug = Augmenter(SPEC, std=np.ones(3))
    out, _ = aug(x, indices=np.arange(16), epoch=1)
    ref, _ = Augmenter(SPEC.replace(cutout=0.0), std=np.ones(3))(x, indices=np.arange(16), epoch=1)
    box = aug.params(np.arange(16), epoch=1, shape=(3, 8, 12)).cutout_box
    erased = 0
    for row, (y0, x0, y1, x1) in enumerate(box):
        inside = torch.zeros(8, 12, dtype=torch.bool)
        inside[y0:y1, x0:x1] = True
        assert torch.equal(out[row][:, inside], torch.zeros_like(out[row][:, inside]))
        assert torch.equal(out[row][:, ~inside], ref[row][:, ~inside])
        erased += int(inside.any())
    assert 0 < erased < 16


def test_boxes_fit_the_grid_and_follow_cutout_size():
    p = sample_params(SPEC, seed=3, epoch=0, indices=np.arange(2000), shape=(2, 10, 20))
    y0, x0, y1, x1 = p.cutout_box.T
    on = y1 > y0
    assert 0.65 < on.mean() < 0.75
    assert np.all((y0 >= 0) & (x0 >= 0) & (y1 <= 10) & (x1 <= 20))
    assert np.all((y1 - y0)[on] >= 2) and np.all((y1 - y0)[on] <= 5)  # 0.25..0.5 of 10
    assert np.all((x1 - x0)[on] >= 5) and np.all((x1 - x0)[on] <= 10)
    assert np.all(p.cutout_box[~on][:, 2:] == p.cutout_box[~on][:, :2])  # empty when off


def test_a_sample_gets_its_box_in_any_batch():
    a = sample_params(SPEC, seed=1, epoch=2, indices=np.array([5, 9, 40]), shape=(2, 8, 8))
    b = sample_params(SPEC, seed=1, epoch=2, indices=np.array([40, 7]), shape=(2, 8, 8))
    np.testing.assert_array_equal(a.cutout_box[2], b.cutout_box[0])


def test_cutout_size_must_be_a_fraction():
    with pytest.raises(ValueError, match="cutout_size"):
        AugmentSpec(cutout=0.5, cutout_size=(0.2, 1.5))


@pytest.mark.parametrize("layout", ["CHW", "HWC"])
def test_dali_erases_the_same_cells(features, layout):
    pytest.importorskip("nvidia.dali")
    from loffdata.augment.dali_backend import DaliBackend

    x = features(6, 4, 7, 9, dtype=torch.float16)
    ref = Augmenter(SPEC, backend="torch", std=np.ones(4))
    p = ref.params(np.arange(6), epoch=0, shape=(4, 7, 9))
    want, _ = ref.apply(x, None, p)
    got, _ = DaliBackend(SPEC, std=np.ones(4), layout=layout).apply(x, None, p)
    torch.testing.assert_close(got, want, rtol=2e-3, atol=2e-3)
    assert torch.equal(got == 0, want == 0)


def test_similarity_counts_cutout_as_a_change(features):
    from loffdata.augment.similarity import mean_similarity

    x = features(8, 3, 8, 8)
    assert mean_similarity(AugmentSpec(cutout=1.0, cutout_size=(0.5, 0.5)), x) < 0.95
    assert mean_similarity(AugmentSpec(cutout=0.0), x) == pytest.approx(1.0)
