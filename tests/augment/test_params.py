import numpy as np
import pytest

from loffdata.augment import AugmentSpec, rng, sample_params
from loffdata.augment.ops.spatial import resamples

SHAPE = (8, 16, 16)


def draw(spec, indices, epoch=0, seed=0, shape=SHAPE):
    return sample_params(spec, seed=seed, epoch=epoch, indices=np.asarray(indices), shape=shape)


def test_uniform_and_normal_moments():
    keys = rng.sample_keys(1, 2, np.arange(200_000), np.zeros(200_000))
    u = rng.uniform(keys, 7)
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    z = rng.normal(keys, 3)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01


def test_flip_rate_matches_probability():
    p = draw(AugmentSpec(hflip=0.3, vflip=0.7), np.arange(20_000))
    assert abs(p.hflip.mean() - 0.3) < 0.015 and abs(p.vflip.mean() - 0.7) < 0.015
    assert abs(np.corrcoef(p.hflip, p.vflip)[0, 1]) < 0.03


def test_crop_area_and_ratio_within_range():
    spec = AugmentSpec(crop=1.0, crop_scale=(0.2, 0.6), crop_ratio=(0.5, 2.0))
    p = draw(spec, np.arange(5_000), shape=(4, 16, 24))
    h, w = p.box[:, 2] - p.box[:, 0], p.box[:, 3] - p.box[:, 1]
    area = h * w / (16 * 24)
    full = np.isclose(area, 1.0)
    assert full.mean() < 0.01
    assert np.all((area[~full] >= 0.2 - 1e-9) & (area[~full] <= 0.6 + 1e-9))
    ratio = w[~full] / h[~full]
    assert np.all((ratio >= 0.5 - 1e-9) & (ratio <= 2.0 + 1e-9))
    assert np.all(p.box[:, :2] >= 0) and np.all(p.box[:, 2] <= 16) and np.all(p.box[:, 3] <= 24)


def test_no_crop_is_full_box():
    p = draw(AugmentSpec(hflip=0.5), np.arange(10))
    assert np.all(p.box == [0, 0, 16, 16]) and not resamples(p)


def test_same_keys_same_params_other_epoch_differs():
    spec = AugmentSpec.preset("loffta", rot90=0.5, jitter=1.0, brightness=0.3, channel_dropout=0.5)
    a, b = draw(spec, np.arange(64)), draw(spec, np.arange(64))
    for name in ("hflip", "box", "rot_k", "brightness", "noise_scale", "keep"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    c = draw(spec, np.arange(64), epoch=1)
    assert not np.array_equal(a.box, c.box)
    d = draw(spec, np.arange(64), seed=1)
    assert not np.array_equal(a.box, d.box)


def test_params_of_an_index_do_not_depend_on_the_batch():
    spec = AugmentSpec.preset("loffta", views=2, jitter=1.0, brightness=0.3, channel_dropout=0.5)
    whole = draw(spec, np.arange(100, 132))
    part = draw(spec, np.array([131, 7, 115]))  # other batch, other size, other order
    rows_whole = np.array([(31 * 2), 31 * 2 + 1, 15 * 2, 15 * 2 + 1])
    rows_part = np.array([0, 1, 4, 5])
    for name in ("hflip", "box", "brightness", "noise_scale", "keep"):
        np.testing.assert_array_equal(
            getattr(whole, name)[rows_whole], getattr(part, name)[rows_part]
        )


def test_views_differ_and_are_adjacent():
    p = draw(AugmentSpec.preset("loffta", views=3), np.array([5, 9]))
    np.testing.assert_array_equal(p.indices, [5, 5, 5, 9, 9, 9])
    np.testing.assert_array_equal(p.views, [0, 1, 2, 0, 1, 2])
    assert len({tuple(b) for b in p.box[:3]}) == 3


def test_rot90_k_values():
    p = draw(AugmentSpec(rot90=1.0), np.arange(3000))
    assert set(np.unique(p.rot_k)) == {1, 2, 3}
    q = draw(AugmentSpec(rot90=1.0, out_size=(8, 12)), np.arange(100))
    assert set(np.unique(q.rot_k)) == {2}


def test_channel_dropout_rate():
    p = draw(
        AugmentSpec(channel_dropout=1.0, channel_dropout_rate=0.25),
        np.arange(2000),
        shape=(64, 7, 7),
    )
    assert abs((~p.keep).mean() - 0.25) < 0.01


def test_mixing_params():
    spec = AugmentSpec(mixup=0.5, cutmix=0.5, num_classes=10)
    p = draw(spec, np.arange(256))
    assert sorted(p.mix_partner) == list(range(256))
    assert abs((p.mix_mode == 1).mean() - 0.5) < 0.1 and np.all(p.mix_mode > 0)
    assert np.all((p.mix_lam >= 0) & (p.mix_lam <= 1))
    cut = p.mix_mode == 2
    area = (p.cut_box[cut, 2] - p.cut_box[cut, 0]) * (p.cut_box[cut, 3] - p.cut_box[cut, 1])
    np.testing.assert_allclose(1 - area / 256, p.mix_lam[cut], atol=1e-6)
    again = draw(spec, np.arange(256))
    np.testing.assert_array_equal(p.mix_partner, again.mix_partner)


def test_trivial_mode_picks_one_op_per_row():
    spec = AugmentSpec(
        trivial=True, noise_std=(0, 0.5), brightness=0.5, contrast=0.3, crop_scale=(0.3, 1.0)
    )
    p = draw(spec, np.arange(4000))
    full = np.all(p.box == [0, 0, 16, 16], axis=1)
    ops = np.stack(
        [
            p.hflip,
            p.vflip,
            p.rot_k > 0,
            ~full,
            p.noise_scale > 0,
            np.any(p.brightness != 0, axis=1),
            ~p.keep.all(1),
        ],
        1,
    )
    assert ops.sum(1).max() <= 1
    frac = ops.mean(0)
    assert np.all(np.abs(frac[:3] - 1 / 8) < 0.03)
    assert np.all(p.noise_scale <= 0.5)


def test_bad_indices():
    with pytest.raises(ValueError, match="1-D integer"):
        draw(AugmentSpec(), np.zeros((2, 2), dtype=np.int64))
