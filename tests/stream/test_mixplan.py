"""Properties of the mix plan (hypothesis): epoch composition, balanced passes, interleaving."""

from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from loffdata.stream.mixplan import epoch_counts, interleave, mix_sequence, source_stream

sizes_st = st.lists(st.integers(1, 60), min_size=1, max_size=4)


@settings(max_examples=60, deadline=None)
@given(sizes=sizes_st, data=st.data())
def test_epoch_counts_follow_the_weights(sizes, data):
    weights = data.draw(st.lists(st.floats(0.1, 10), min_size=len(sizes), max_size=len(sizes)))
    policy = data.draw(st.sampled_from(["total", "smallest", 37]))
    n = epoch_counts(sizes, weights, policy)
    p = np.asarray(weights) / sum(weights)
    total = int(n.sum())
    assert total == {"total": sum(sizes), 37: 37}.get(policy, total)
    assert np.all(np.abs(n - p * total) <= 1.0 + 1e-9)  # largest remainders: off by under one
    if policy == "smallest":
        assert np.all(n <= np.asarray(sizes))  # nothing repeats


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(0, 9), min_size=1, max_size=5),
    n=st.integers(1, 40),
    shuffle=st.booleans(),
)
def test_source_streams_use_every_sample_equally_over_epochs(counts, n, shuffle):
    size = sum(counts)
    if size == 0:
        return
    epochs = size  # epochs x n samples = n whole passes
    seen = Counter(
        np.concatenate(
            [
                source_stream(counts, n, seed=1, source=0, epoch=e, shuffle=shuffle)
                for e in range(epochs)
            ]
        ).tolist()
    )
    assert seen == {i: n for i in range(size)}


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(0, 30), min_size=1, max_size=4), seed=st.integers(0, 99))
def test_interleave_is_a_merge_that_keeps_each_order(lengths, seed):
    seqs, base = [], 0
    for k in lengths:
        seqs.append(np.arange(base, base + k))
        base += k
    out = interleave(seqs, seed=seed, epoch=0, shuffle=True)
    assert sorted(out.tolist()) == list(range(base))
    for s in seqs:  # each source's items appear in their own order
        mine = out[np.isin(out, s)]
        assert mine.tolist() == s.tolist()


def test_mix_sequence_is_deterministic_and_differs_by_epoch():
    a = mix_sequence([[5, 5], [3]], [6, 6], seed=2, epoch=0, shuffle=True)
    assert a.tolist() == mix_sequence([[5, 5], [3]], [6, 6], seed=2, epoch=0, shuffle=True).tolist()
    assert a.tolist() != mix_sequence([[5, 5], [3]], [6, 6], seed=2, epoch=1, shuffle=True).tolist()
    assert Counter(int(i >= 10) for i in a) == {0: 6, 1: 6}
