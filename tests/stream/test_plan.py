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
    epoch_order,
    epoch_sequence,
    global_order,
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


def delivered(plan, num_workers=1):
    return loader_order([plan.worker(i, num_workers) for i in range(num_workers)])


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
    seq = global_order(epoch_sequence(counts, seed=1, epoch=2), cfg, 2)
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
def test_loader_order_is_the_batch_order_for_any_workers(case):
    counts, world, workers, batch, partial, drop_last, buf = case
    cfg = PlanConfig(seed=2, shuffle_buffer=buf, partial=partial, drop_last=drop_last)
    plan = rank_plan(counts, cfg, Layout(world, workers, batch), rank=world - 1, epoch=0)
    expected = [tuple(plan.batch(b).tolist()) for b in range(plan.num_batches)]
    for w in (1, 2, 3, workers):
        assert delivered(plan, w) == expected
    for w in range(workers):
        sizes = plan.worker(w, workers).batch_sizes.tolist()
        assert all(s == batch for s in sizes[:-1])


@settings(max_examples=150, deadline=None)
@given(layouts)
def test_global_batches_are_the_same_for_any_world_at_one_global_batch_size(case):
    counts, _, _, batch, partial, drop_last, buf = case
    cfg = PlanConfig(seed=3, shuffle_buffer=buf, partial=partial, drop_last=drop_last)
    big = 4 * batch
    order = global_order(epoch_sequence(counts, seed=3, epoch=1), cfg, 1)
    n = len(order)
    for world in (1, 2, 4):
        plans = [
            rank_plan(counts, cfg, Layout(world, 2, big // world), rank=r, epoch=1)
            for r in range(world)
        ]
        glob = [np.concatenate([p.batch(t) for p in plans]) for t in range(plans[0].num_batches)]
        whole = n - n % world if partial == "drop" else n  # positions before any padding
        for t, g in enumerate(glob):
            lo, hi = t * big, min((t + 1) * big, whole)
            if hi > lo:
                assert (
                    g[: hi - lo].tolist() == order[lo:hi].tolist()
                )  # global batch t = G[tB : (t + 1)B]


def test_no_shuffle_is_manifest_order():
    cfg = PlanConfig(shuffle=False)
    plan = rank_plan([4, 3, 5], cfg, Layout(1, 2, 2), rank=0, epoch=9)
    assert plan.indices.tolist() == list(range(12))


def test_uneven_shards_fewer_than_ranks_times_workers():
    cfg = PlanConfig(seed=0)
    plans = [rank_plan([7, 1, 2], cfg, Layout(2, 3, 1), rank=r, epoch=0) for r in range(2)]
    assert [len(p.indices) for p in plans] == [5, 5]
    assert sorted(np.concatenate([p.indices for p in plans]).tolist()) == list(range(10))
    assert all(len(p.worker(w, 3).indices) > 0 for p in plans for w in range(3))


def test_pad_when_fewer_samples_than_ranks():
    plans = [rank_plan([2], PlanConfig(), Layout(4, 1, 1), rank=r, epoch=0) for r in range(4)]
    assert [len(p.indices) for p in plans] == [1, 1, 1, 1]
    assert Counter(np.concatenate([p.indices for p in plans]).tolist()) == Counter({0: 2, 1: 2})


def test_random_streams_differ_between_windows_and_epochs():
    cfg = PlanConfig(seed=0, shuffle_buffer=8)
    plan = rank_plan([8] * 4, cfg, Layout(1, 2, 1), rank=0, epoch=0)
    first, second = plan.indices[:8], plan.indices[8:16]
    assert not np.array_equal(np.argsort(first), np.argsort(second))  # not the same permutation
    again = rank_plan([8] * 4, cfg, Layout(1, 3, 1), rank=0, epoch=0)
    other = rank_plan([8] * 4, cfg, Layout(1, 2, 1), rank=0, epoch=1)
    assert np.array_equal(plan.indices, again.indices) and not np.array_equal(
        plan.indices, other.indices
    )


def _global_batches(counts, cfg, layout, epoch=0, state=None):
    """The global batches of all ranks (of the rest of ``state``'s epoch when given)."""
    plans = [
        rank_plan(counts, cfg, layout, rank=r, epoch=epoch)
        if state is None
        else resume_plan(counts, cfg, state, layout, rank=r)[0]
        for r in range(layout.world_size)
    ]
    return [
        tuple(np.concatenate([p.batch(t) for p in plans]).tolist())
        for t in range(plans[0].num_batches)
    ]


@settings(max_examples=100, deadline=None)
@given(layouts, st.integers(1, 4), st.sampled_from([1, 2, 4]), st.integers(0, 30))
def test_resume_any_workers_and_world_at_one_global_batch_size_continues_exactly(
    case, new_workers, new_world, k
):
    counts, _, workers, batch, partial, drop_last, buf = case
    cfg = PlanConfig(seed=4, shuffle_buffer=buf, partial=partial, drop_last=drop_last)
    big = 4 * batch
    for world in (1, 2, 4):
        layout = Layout(world, workers, big // world)
        full = _global_batches(counts, cfg, layout, epoch=3)
        k = min(k, len(full))
        state = PlanState(epoch=3, layout=layout, delivered=k)
        new = Layout(new_world, new_workers, big // new_world)
        rest = _global_batches(counts, cfg, new, state=state)
        if world == new_world:
            assert rest == full[k:]  # the same global batches, whatever the workers
        whole = [i for b in full for i in b]
        joined = [i for b in full[:k] + rest for i in b]
        m = min(len(whole), len(joined), sum(counts))  # before padding or dropping by world
        assert joined[:m] == whole[:m]
        left = sum(counts) - k * big  # samples not yet delivered
        if k < len(full) and not drop_last and (partial == "pad" or left >= new_world):
            assert rest  # the rest is never lost (``drop`` may drop fewer than a rank's share)


@settings(max_examples=100, deadline=None)
@given(layouts, st.integers(1, 4), st.integers(1, 4), st.integers(0, 30))
def test_resume_changed_batch_size_gives_the_rest_of_the_same_order(case, new_world, new_batch, k):
    counts, world, workers, batch, partial, drop_last, buf = case
    cfg = PlanConfig(seed=4, shuffle_buffer=buf, drop_last=drop_last)
    old = Layout(world, workers, batch)
    order = global_order(epoch_sequence(counts, seed=4, epoch=1), cfg, 1).tolist()
    head = [i for b in _global_batches(counts, cfg, old, epoch=1)[:k] for i in b]
    state = PlanState(
        epoch=1, layout=old, delivered=min(k, len(_global_batches(counts, cfg, old, epoch=1)))
    )
    new = Layout(new_world, 2, new_batch)
    rest = [i for b in _global_batches(counts, cfg, new, state=state) for i in b]
    n = len(order)
    if len(head) >= n or not n:
        return
    joined = head + rest
    m = min(n, len(joined))
    assert joined[:m] == order[:m]  # the same order; then at most padding from the epoch's start
    if not drop_last:
        assert len(joined) >= n  # nothing lost
    # a second resume from the resumed state keeps working (positions add up)
    chained = PlanState(epoch=1, layout=new, delivered=1, start=state.position)
    assert chained.position == state.position + new_world * new_batch


def test_state_roundtrip():
    s = PlanState(epoch=2, layout=Layout(2, 3, 4), delivered=5, start=24)
    assert PlanState.from_dict(s.to_dict()) == s
    assert s.position == 24 + 5 * 8


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


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(0, 9), max_size=12),
    st.integers(1, 7),
    st.booleans(),
    st.integers(0, 3),
    st.randoms(use_true_random=False),
)
def test_the_lazy_order_is_the_window_shuffled_sequence(counts, buf, shuffle, epoch, rnd):
    cfg = PlanConfig(seed=3, shuffle=shuffle, shuffle_buffer=buf)
    eager = global_order(epoch_sequence(counts, seed=3, epoch=epoch, shuffle=shuffle), cfg, epoch)
    lazy = epoch_order(counts, cfg, epoch)
    assert np.asarray(lazy).tolist() == eager.tolist()
    positions = [rnd.randrange(len(eager)) for _ in range(20)] if len(eager) else []
    assert lazy.at(np.array(positions, dtype=np.int64)).tolist() == eager[positions].tolist()


@settings(max_examples=60, deadline=None)
@given(layouts, st.randoms(use_true_random=False))
def test_a_workers_lazy_indices_slice_like_the_array(case, rnd):
    counts, world, workers, batch, partial, drop_last, buf = case
    cfg = PlanConfig(seed=2, shuffle_buffer=buf, partial=partial, drop_last=drop_last)
    plan = rank_plan(counts, cfg, Layout(world, workers, batch), rank=world - 1, epoch=1)
    lazy = plan.worker(workers - 1, workers).indices
    whole = np.asarray(lazy)
    mine = [plan.batch(b) for b in range(workers - 1, plan.num_batches, workers)]
    assert whole.tolist() == (np.concatenate(mine).tolist() if mine else [])
    for _ in range(5):
        a, b = sorted(rnd.randrange(len(whole) + 1) for _ in range(2))
        assert lazy[a:b].tolist() == whole[a:b].tolist()
        assert np.asarray(lazy[a:]).tolist() == whole[a:].tolist()
        if len(whole):
            k = rnd.randrange(-len(whole), len(whole))
            assert lazy[k] == whole[k]
