"""The epoch plan: pure functions of (seed, epoch, layout, shard sample counts)."""

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loffdata.stream.plan import (
    Layout,
    PlanConfig,
    PlanState,
    delivery_order,
    epoch_sequence,
    rank_plan,
    resume_plan,
    sample_locations,
    shard_order,
    window_shuffle,
)


def loader_order(worker_plans):
    """What torch's DataLoader delivers: one batch per worker in turn, exhausted ones skipped."""
    queues = []
    for wp in worker_plans:
        bounds = np.concatenate([[0], np.cumsum(wp.batch_sizes)])
        queues.append([tuple(wp.indices[a:b].tolist()) for a, b in zip(bounds[:-1], bounds[1:])])
    out, j = [], 0
    while any(j < len(q) for q in queues):
        out += [q[j] for q in queues if j < len(q)]
        j += 1
    return out


def delivered(plan, start=0, num_workers=None):
    w = num_workers or len(plan.worker_batches)
    return loader_order([plan.deal(start, w, i) for i in range(w)])


layouts = st.tuples(
    st.lists(
        st.integers(0, 9), min_size=1, max_size=7
    ),  # samples per shard (uneven, empty ones too)
    st.integers(1, 4),  # world
    st.integers(1, 3),  # workers
    st.integers(1, 4),  # batch
    st.sampled_from(["pad", "drop"]),
    st.booleans(),  # drop_last
    st.integers(1, 6),  # shuffle buffer
)


def test_shard_order_is_a_seeded_permutation():
    a = shard_order(50, seed=3, epoch=1)
    assert sorted(a.tolist()) == list(range(50))
    assert np.array_equal(a, shard_order(50, seed=3, epoch=1))
    assert not np.array_equal(a, shard_order(50, seed=3, epoch=2))
    assert not np.array_equal(a, shard_order(50, seed=4, epoch=1))
    assert shard_order(50, seed=3, epoch=1, shuffle=False).tolist() == list(range(50))


def test_epoch_sequence_concatenates_shards_in_order():
    counts = [3, 0, 2, 4]
    seq = epoch_sequence(counts, seed=0, epoch=0, shuffle=False)
    assert seq.tolist() == list(range(9))
    seq = epoch_sequence(counts, seed=5, epoch=7)
    order = shard_order(4, seed=5, epoch=7)
    starts = [0, 3, 3, 5, 9]
    assert seq.tolist() == [i for s in order for i in range(starts[s], starts[s + 1])]


def test_sample_locations():
    shard, local = sample_locations([3, 0, 2, 4], np.array([0, 2, 3, 4, 5, 8]))
    assert shard.tolist() == [0, 0, 2, 2, 3, 3] and local.tolist() == [0, 2, 0, 1, 0, 3]


def test_delivery_order_is_round_robin_over_contiguous_workers():
    # 5 batches, 2 workers: worker 0 holds 0,1,2 and worker 1 holds 3,4
    assert delivery_order([3, 2]).tolist() == [0, 3, 1, 4, 2]
    assert delivery_order([1, 1, 0]).tolist() == [0, 1]
    assert delivery_order([0, 0]).tolist() == []


def test_window_shuffle_keyed_by_position():
    a = window_shuffle(10, seed=0, epoch=0, start=0, window=4)
    assert sorted(a[:4].tolist()) == [0, 1, 2, 3] and sorted(a[8:].tolist()) == [8, 9]
    assert np.array_equal(a, window_shuffle(10, seed=0, epoch=0, start=0, window=4))
    other_worker = window_shuffle(10, seed=0, epoch=0, start=10, window=4)
    assert not np.array_equal(a, other_worker)  # a different position: a different stream
    assert not np.array_equal(a, window_shuffle(10, seed=0, epoch=1, start=0, window=4))


@settings(max_examples=150, deadline=None)
@given(layouts)
def test_ranks_equal_and_cover_the_epoch(case):
    counts, world, workers, batch, partial, drop_last, buf = case
    cfg = PlanConfig(seed=1, shuffle_buffer=buf, partial=partial, drop_last=drop_last)
    layout = Layout(world, workers, batch)
    plans = [rank_plan(counts, cfg, layout, rank=r, epoch=2) for r in range(world)]
    n = sum(counts)
    length = -(-n // world) if partial == "pad" else n // world
    usable = length // batch * batch if drop_last else length
    assert {p.num_batches for p in plans} == {-(-usable // batch)}
    assert {len(p.indices) for p in plans} == {usable}
    everything = Counter(np.concatenate([p.indices for p in plans]).tolist())
    seq = epoch_sequence(counts, seed=1, epoch=2)
    if partial == "pad" and not drop_last:
        assert set(everything) == set(range(n))
        repeats = (
            Counter(seq[np.arange(world * length - n) % max(n, 1)].tolist()) if n else Counter()
        )
        assert (
            everything - Counter(range(n)) == repeats
        )  # padding repeats the epoch's first samples
    else:
        assert max(everything.values(), default=1) == 1 or partial == "pad"


@settings(max_examples=150, deadline=None)
@given(layouts)
def test_workers_hold_whole_contiguous_batches_and_loader_order_matches(case):
    counts, world, workers, batch, partial, drop_last, buf = case
    cfg = PlanConfig(seed=2, shuffle_buffer=buf, partial=partial, drop_last=drop_last)
    plan = rank_plan(counts, cfg, Layout(world, workers, batch), rank=world - 1, epoch=0)
    own = loader_order([plan.worker(w) for w in range(workers)])
    expected = [tuple(plan.batch(int(b)).tolist()) for b in plan.order]
    assert own == expected == delivered(plan)
    for w in range(workers):
        sizes = plan.worker(w).batch_sizes.tolist()
        assert all(s == batch for s in sizes[:-1])


def test_no_shuffle_is_manifest_order():
    cfg = PlanConfig(shuffle=False)
    plan = rank_plan([4, 3, 5], cfg, Layout(1, 2, 2), rank=0, epoch=9)
    assert plan.indices.tolist() == list(range(12))


def test_uneven_shards_fewer_than_ranks_times_workers():
    cfg = PlanConfig(seed=0)
    plans = [rank_plan([7, 1, 2], cfg, Layout(2, 3, 1), rank=r, epoch=0) for r in range(2)]
    assert [len(p.indices) for p in plans] == [5, 5]
    assert sorted(np.concatenate([p.indices for p in plans]).tolist()) == list(range(10))
    assert all(len(p.worker(w).indices) > 0 for p in plans for w in range(3))


def test_pad_when_fewer_samples_than_ranks():
    plans = [rank_plan([2], PlanConfig(), Layout(4, 1, 1), rank=r, epoch=0) for r in range(4)]
    assert [len(p.indices) for p in plans] == [1, 1, 1, 1]
    assert Counter(np.concatenate([p.indices for p in plans]).tolist()) == Counter({0: 2, 1: 2})


def test_random_streams_differ_between_workers_and_epochs():
    cfg = PlanConfig(seed=0, shuffle_buffer=8)
    plan = rank_plan([8] * 4, cfg, Layout(1, 2, 1), rank=0, epoch=0)
    a, b = plan.worker(0).indices, plan.worker(1).indices
    assert not np.array_equal(np.argsort(a), np.argsort(b))  # not the same permutation
    again = rank_plan([8] * 4, cfg, Layout(1, 2, 1), rank=0, epoch=0)
    other = rank_plan([8] * 4, cfg, Layout(1, 2, 1), rank=0, epoch=1)
    assert np.array_equal(plan.indices, again.indices) and not np.array_equal(
        plan.indices, other.indices
    )


@settings(max_examples=100, deadline=None)
@given(layouts, st.integers(1, 4), st.integers(0, 30))
def test_resume_same_world_any_workers_continues_exactly(case, new_workers, k):
    counts, world, workers, batch, partial, drop_last, buf = case
    cfg = PlanConfig(seed=4, shuffle_buffer=buf, partial=partial, drop_last=drop_last)
    layout = Layout(world, workers, batch)
    plan = rank_plan(counts, cfg, layout, rank=0, epoch=3)
    full = delivered(plan)
    k = min(k, len(full))
    state = PlanState(epoch=3, layout=layout, delivered=k)
    again, base, start = resume_plan(counts, cfg, state, Layout(world, new_workers, batch), rank=0)
    assert base == state and start == k
    assert full[:k] + delivered(again, start, new_workers) == full


@settings(max_examples=100, deadline=None)
@given(layouts, st.integers(1, 4), st.integers(1, 4), st.integers(0, 30))
def test_resume_changed_world_delivers_exactly_the_rest(case, new_world, new_batch, k):
    counts, world, workers, batch, partial, drop_last, buf = case
    cfg = PlanConfig(seed=4, shuffle_buffer=buf, partial=partial, drop_last=drop_last)
    old = Layout(world, workers, batch)
    plans = [rank_plan(counts, cfg, old, rank=r, epoch=1) for r in range(world)]
    k = min(k, plans[0].num_batches)
    done = set(np.concatenate([p.delivered_indices(k) for p in plans]).tolist())
    planned = set(np.concatenate([p.indices for p in plans]).tolist())
    state = PlanState(epoch=1, layout=old, delivered=k)
    new = Layout(new_world, 2, new_batch)
    if (new_world, new_batch) == (world, batch):
        return  # covered by the test above
    rest = [resume_plan(counts, cfg, state, new, rank=r)[0] for r in range(new_world)]
    got = np.concatenate([p.indices for p in rest]).tolist()
    assert len({p.num_batches for p in rest}) == 1  # still equal across ranks
    remaining = planned - done
    if cfg.partial == "pad" and not drop_last:
        assert set(got) == remaining  # every remaining sample, plus padding repeats
    assert set(got) <= remaining
    # a second resume inside the resumed plan keeps working (chained states)
    chained = PlanState(epoch=1, layout=new, delivered=rest[0].num_batches, parent=state)
    tail = resume_plan(counts, cfg, chained, new, rank=0)
    assert tail[2] == rest[0].num_batches


def test_state_roundtrip():
    s = PlanState(
        epoch=2,
        layout=Layout(2, 3, 4),
        delivered=5,
        parent=PlanState(epoch=2, layout=Layout(1, 1, 4), delivered=1),
    )
    assert PlanState.from_dict(s.to_dict()) == s


def test_invalid_inputs():
    with pytest.raises(ValueError):
        PlanConfig(partial="wrap")
    with pytest.raises(ValueError):
        Layout(world_size=0)
    with pytest.raises(ValueError):
        rank_plan([3], PlanConfig(), Layout(2, 1, 1), rank=2, epoch=0)
    with pytest.raises(ValueError):
        resume_plan(
            [3], PlanConfig(), PlanState(0, Layout(1, 1, 1), delivered=9), Layout(1, 1, 1), rank=0
        )
