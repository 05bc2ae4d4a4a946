"""Exact semantics of each step of the torch (reference) backend against plain torch."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from loffdata.augment import Augmenter, AugmentSpec
from loffdata.augment.ops.spatial import resamples


def run(spec, x, y=None, *, indices=None, std=None, mean=None, epoch=0):
    aug = Augmenter(spec, backend="torch", std=std, mean=mean)
    idx = np.arange(x.shape[0]) if indices is None else indices
    return aug(x, y, indices=idx, epoch=epoch), aug.params(
        idx, epoch=epoch, shape=tuple(x.shape[1:])
    )


def test_none_preset_is_identity(features):
    x = features(4, 6, 7, 7, dtype=torch.float16)
    (out, y), _ = run(AugmentSpec.preset("none"), x, torch.arange(4))
    assert out.dtype == torch.float16 and torch.equal(out, x) and torch.equal(y, torch.arange(4))


@pytest.mark.parametrize("field, dim", [("hflip", -1), ("vflip", -2)])
def test_flip_is_torch_flip(features, field, dim):
    x = features(16, 5, 7, 9)
    (out, _), p = run(AugmentSpec(**{field: 0.5}), x)
    flipped = getattr(p, field)
    assert 0 < flipped.sum() < 16
    torch.testing.assert_close(out[flipped], x[flipped].flip(dim), rtol=0, atol=0)
    torch.testing.assert_close(out[~flipped], x[~flipped], rtol=0, atol=0)


def test_flip_through_resample_path_matches_flip(features):
    x = features(8, 5, 8, 8)
    spec = AugmentSpec(
        hflip=0.5, crop=1.0, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), out_size=(8, 8)
    )
    aug = Augmenter(spec, backend="torch")
    p = aug.params(np.arange(8), epoch=0, shape=(5, 8, 8))
    box = p.box.copy()
    box[0] = [1.0, 1.0, 5.0, 5.0]  # one cropped row sends the whole batch through grid_sample
    p = p.replace(box=box)
    assert resamples(p) and 0 < p.hflip[1:].sum() < 7
    out, _ = aug.apply(x, None, p)
    ref = torch.where(torch.as_tensor(p.hflip)[:, None, None, None], x.flip(-1), x)
    torch.testing.assert_close(out[1:], ref[1:], rtol=0, atol=1e-5)


def test_crop_scale_one_ratio_one_is_identity(features):
    x = features(4, 3, 12, 12)
    spec = AugmentSpec(crop=1.0, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), out_size=(12, 12))
    (out, _), p = run(spec, x)
    np.testing.assert_allclose(p.box, np.tile([0, 0, 12, 12], (4, 1)))
    torch.testing.assert_close(out, x, rtol=0, atol=1e-6)


def test_crop_equals_interpolate_of_integer_box(features):
    x = features(1, 3, 16, 16)
    spec = AugmentSpec(crop=1.0, out_size=(4, 4))
    aug = Augmenter(spec, backend="torch")
    p = aug.params(np.arange(1), epoch=0, shape=(3, 16, 16))
    box = np.array([[4.0, 8.0, 12.0, 16.0]])  # an 8x8 crop resized to 4x4 = 2x2 mean pooling
    p = p.replace(box=box)
    out, _ = aug.apply(x, None, p)
    torch.testing.assert_close(out, F.avg_pool2d(x[:, :, 4:12, 8:16], 2), rtol=0, atol=1e-5)


def test_pooling_factor_and_adaptive(features):
    x = features(2, 4, 16, 16)
    (out, _), _ = run(AugmentSpec(pool_factor=2), x)
    torch.testing.assert_close(out, F.avg_pool2d(x, 2), rtol=0, atol=0)
    (out, _), _ = run(AugmentSpec(pool_size=(5, 5)), x)
    torch.testing.assert_close(out, F.adaptive_avg_pool2d(x, (5, 5)), rtol=0, atol=0)


def test_rot90_is_torch_rot90(features):
    x = features(24, 3, 7, 7)
    (out, _), p = run(AugmentSpec(rot90=0.8), x)
    for i, k in enumerate(p.rot_k):
        torch.testing.assert_close(out[i], torch.rot90(x[i], int(k), dims=(-2, -1)), rtol=0, atol=0)


def test_noise_has_requested_relative_std(features):
    c = 8
    std = np.linspace(0.5, 4.0, c)
    x = features(64, c, 16, 16)
    (out, _), p = run(AugmentSpec(noise=1.0, noise_std=(0.2, 0.2)), x, std=std)
    diff = (out - x).transpose(0, 1).reshape(c, -1)
    np.testing.assert_allclose(diff.std(1).numpy(), 0.2 * std, rtol=0.02)
    assert abs(float(diff.mean(1).abs().max())) < 0.02


def test_noise_probability_zero_rows_untouched(features):
    x = features(32, 4, 7, 7)
    (out, _), p = run(AugmentSpec(noise=0.5), x)
    clean = p.noise_scale == 0
    assert 0 < clean.sum() < 32
    torch.testing.assert_close(out[clean], x[clean], rtol=0, atol=0)


def test_jitter_is_per_channel_affine(features):
    c = 6
    mean, std = np.linspace(-1, 1, c), np.linspace(0.5, 1.5, c)
    x = features(4, c, 7, 7)
    (out, _), p = run(AugmentSpec(jitter=1.0, brightness=0.5, contrast=0.3), x, mean=mean, std=std)
    con, bri = (
        torch.as_tensor(a, dtype=torch.float64)[:, :, None, None]
        for a in (p.contrast, p.brightness)
    )
    m, s = (torch.as_tensor(a)[None, :, None, None] for a in (mean, std))
    ref = (x.double() - m) * con + m + bri * s
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    assert len(np.unique(p.brightness[0])) == c


def test_normalize_uses_manifest_stats(features):
    c = 5
    mean, std = np.linspace(-1, 1, c), np.linspace(0.5, 1.5, c)
    x = features(3, c, 7, 7)
    (out, _), _ = run(AugmentSpec(normalize=True), x, mean=mean, std=std)
    m, s = (torch.as_tensor(a, dtype=torch.float32)[None, :, None, None] for a in (mean, std))
    torch.testing.assert_close(out, (x - m) / s, rtol=1e-5, atol=1e-5)


def test_channel_dropout_zeros_whole_channels(features):
    x = features(200, 32, 7, 7) + 10.0
    (out, _), p = run(AugmentSpec(channel_dropout=1.0, channel_dropout_rate=0.3), x)
    zero = (out == 0).all(-1).all(-1)
    torch.testing.assert_close(zero, torch.as_tensor(~p.keep))
    assert abs(zero.float().mean().item() - 0.3) < 0.02
    torch.testing.assert_close(out[~zero], x[~zero], rtol=0, atol=0)


def test_mixup_weights_and_soft_labels(features):
    x = features(32, 4, 7, 7)
    y = torch.arange(32) % 5
    (out, soft), p = run(AugmentSpec(mixup=1.0, num_classes=5), x, y)
    lam = torch.as_tensor(p.mix_lam)[:, None, None, None]
    partner = torch.as_tensor(p.mix_partner)
    torch.testing.assert_close(out, lam * x + (1 - lam) * x[partner], rtol=1e-5, atol=1e-5)
    assert soft.shape == (32, 5) and soft.dtype == torch.float32
    torch.testing.assert_close(soft.sum(1), torch.ones(32))
    own = soft.gather(1, y[:, None])[:, 0]
    other = y != y[partner]
    torch.testing.assert_close(own[other], torch.as_tensor(p.mix_lam)[other.numpy()])


def test_cutmix_pastes_partner_box(features):
    x = features(16, 3, 8, 8)
    y = torch.arange(16) % 3
    (out, soft), p = run(AugmentSpec(cutmix=1.0, num_classes=3), x, y)
    for i in range(16):
        y0, x0, y1, x1 = p.cut_box[i]
        j = p.mix_partner[i]
        ref = x[i].clone()
        ref[:, y0:y1, x0:x1] = x[j, :, y0:y1, x0:x1]
        torch.testing.assert_close(out[i], ref, rtol=0, atol=0)
    torch.testing.assert_close(soft.sum(1), torch.ones(16))


def test_views_shape_and_label_order(features):
    x = features(3, 4, 9, 9)
    (out, y), _ = run(
        AugmentSpec.preset("loffta", views=4, out_size=(6, 6)), x, torch.tensor([7, 8, 9])
    )
    assert out.shape == (12, 4, 6, 6)
    assert y.tolist() == [7] * 4 + [8] * 4 + [9] * 4


def test_deterministic_and_epoch_dependent(features):
    x = features(4, 4, 8, 8)
    spec = AugmentSpec.preset("loffta")
    (a, _), _ = run(spec, x)
    (b, _), _ = run(spec, x)
    (c, _), _ = run(spec, x, epoch=1)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bfloat16_and_out_dtype(features):
    x = features(2, 4, 8, 8, dtype=torch.bfloat16)
    (out, _), _ = run(AugmentSpec.preset("loffta"), x)
    assert out.dtype == torch.bfloat16
    (out, _), _ = run(AugmentSpec.preset("loffta", out_dtype="float32"), x)
    assert out.dtype == torch.float32


def test_errors(features):
    x = features(2, 4, 8, 8)
    with pytest.raises(ValueError, match="normalize"):
        Augmenter(AugmentSpec(normalize=True), backend="torch")
    with pytest.raises(ValueError, match="channels"):
        run(AugmentSpec(noise=1.0), x, std=[1.0, 2.0])
    with pytest.raises(ValueError, match="unknown augmentation backend"):
        Augmenter(AugmentSpec(), backend="jax")
    aug = Augmenter(AugmentSpec(), backend="torch")
    with pytest.raises(ValueError, match="params drawn"):
        aug.apply(x, None, aug.params(np.arange(3), epoch=0, shape=(4, 8, 8)))
    with pytest.raises(ValueError, match="float16"):
        aug(x.double(), indices=np.arange(2))
    with pytest.raises(ValueError, match="labels"):
        aug(x, torch.zeros(3, dtype=torch.int64), indices=np.arange(2))
