"""Noise and mixup/cutmix parameters are a function of the global order (issue 24).

Each rank's rows are computed directly, in-process, from the epoch plan: for world sizes
1, 2 and 4 at one global batch size, the ranks' parameters concatenated are the world-1
parameters of the same global batch, noise fields and mixing partners included.
"""

import numpy as np
import pytest
import torch

from loffdata.augment import AugmentSpec, sample_params
from loffdata.augment.channel import noise_field
from loffdata.stream.plan import Layout, PlanConfig, rank_plan

COUNTS = [7, 9, 6, 10]  # 32 samples: four global batches of 8
SHAPE = (3, 4, 4)
SPEC = AugmentSpec(
    views=2,
    hflip=0.5,
    noise=0.7,
    mixup=0.4,
    cutmix=0.4,
    num_classes=3,
    mix_group=2,
)
PER_ROW = ("indices", "views", "hflip", "noise_scale", "noise_seed", "mix_mode", "mix_lam")


def _global_batches(world, spec=SPEC, seed=5, epoch=1):
    """``[(params fields, noise field)]`` per global batch, the ranks' rows concatenated."""
    cfg = PlanConfig(seed=seed, shuffle_buffer=8)
    plans = [
        rank_plan(COUNTS, cfg, Layout(world, 1, 8 // world), rank=r, epoch=epoch)
        for r in range(world)
    ]
    out = []
    for t in range(plans[0].num_batches):
        parts = []
        for r, plan in enumerate(plans):
            p = sample_params(spec, seed=seed, epoch=epoch, indices=plan.batch(t), shape=SHAPE)
            offset = r * (8 // world) * spec.views  # the rank's first row in the global batch
            fields = {k: getattr(p, k) for k in PER_ROW} | {
                "cut_box": p.cut_box,
                "partner": p.mix_partner + offset,
            }
            parts.append((fields, noise_field(p, p.out_hw, device="cpu")))
        fields = {k: np.concatenate([f[k] for f, _ in parts]) for k in parts[0][0]}
        out.append((fields, torch.cat([z for _, z in parts])))
    return out


def _assert_same(a, b):
    assert len(a) == len(b)
    for (fa, za), (fb, zb) in zip(a, b, strict=True):
        for k in fa:
            np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)
        torch.testing.assert_close(za, zb, rtol=0, atol=0)


@pytest.mark.parametrize("world", [2, 4])
def test_noise_and_mixing_identical_for_world_size_1_2_4(world):
    one = _global_batches(1)
    assert any(f["mix_mode"].any() for f, _ in one) and all(z.abs().sum() > 0 for _, z in one)
    _assert_same(_global_batches(world), one)


def test_partners_stay_in_aligned_groups_of_the_global_order():
    rows = 2 * SPEC.views  # rows per group of mix_group samples
    for fields, _ in _global_batches(1):
        partner = fields["partner"]
        assert np.array_equal(partner // rows, np.arange(partner.size) // rows)
        assert sorted(partner) == list(range(partner.size))


def test_a_sample_keeps_its_noise_in_any_batch():
    spec = AugmentSpec(noise=1.0)
    a = sample_params(spec, seed=0, epoch=0, indices=np.array([3, 8, 1]), shape=SHAPE)
    b = sample_params(spec, seed=0, epoch=0, indices=np.array([8]), shape=SHAPE)
    za, zb = noise_field(a, (4, 4), device="cpu"), noise_field(b, (4, 4), device="cpu")
    torch.testing.assert_close(za[1], zb[0], rtol=0, atol=0)
    assert not torch.equal(za[0], za[1])


def test_a_group_that_does_not_divide_the_rank_batch_pairs_differently():
    """The documented limit: mix_group 8 > per-rank batch 4 at world size 2."""
    spec = SPEC.replace(mix_group=8)
    one, two = _global_batches(1, spec), _global_batches(2, spec)
    assert any(not np.array_equal(a["partner"], b["partner"]) for (a, _), (b, _) in zip(one, two))


@pytest.mark.parametrize("bad", [1, 0, 2.5, True])
def test_mix_group_must_be_an_int_of_at_least_2(bad):
    with pytest.raises(ValueError, match="mix_group"):
        AugmentSpec(mixup=0.5, num_classes=3, mix_group=bad)
