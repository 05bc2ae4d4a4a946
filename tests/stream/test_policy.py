"""The error policy: one stand-in rule for the single-sample and the batch paths."""

from __future__ import annotations

import pytest

from loffdata.errors import LoffError, SampleError
from loffdata.stream.policy import ErrorPolicy


def fill(policy: ErrorPolicy, windows: list[list[str | None]]) -> list[list[str | None]]:
    """Runs windows of items (``None``: unreadable) through the policy's stand-ins."""

    def copy(dst, src):
        dst[0][dst[1]] = src[0][src[1]]

    stand_ins = policy.stand_ins(copy, keep=lambda slot: ([slot[0][slot[1]]], 0))
    for w in windows:
        stand_ins.fill([(w, i) for i in range(len(w))], [x is not None for x in w])
    stand_ins.finish()
    return windows


def test_stand_ins_previous_good_else_next_good_across_windows():
    got = fill(ErrorPolicy("skip"), [[None, None], [None, "a", None], ["b", None]])
    assert got == [["a", "a"], ["a", "a", "a"], ["b", "b"]]


def test_kept_copy_stands_in_even_if_the_handed_out_item_changes():
    first, second = ["a"], [None]
    policy = ErrorPolicy("skip")
    stand_ins = policy.stand_ins(
        lambda d, s: d[0].__setitem__(d[1], s[0][s[1]]), keep=lambda s: ([s[0][s[1]]], 0)
    )
    stand_ins.fill([(first, 0)], [True])
    first[0] = "changed by the consumer"
    stand_ins.fill([(second, 0)], [False])
    assert second == ["a"]


def test_nothing_readable_is_a_clear_error():
    with pytest.raises(LoffError, match="no readable sample to stand in for 3"):
        fill(ErrorPolicy("skip"), [[None], [None, None]])


def test_skip_counts_and_warns_raise_raises():
    err = SampleError("bad", shard="s.tar", key="k")
    policy = ErrorPolicy("skip")
    with pytest.warns(RuntimeWarning, match="skipping 2 sample.*s.tar"):
        policy.skip(err, n=2)
    assert policy.skipped == {"samples": 2, "errors": 1}
    with pytest.raises(SampleError):
        ErrorPolicy("raise").skip(err, n=1)
    with pytest.raises(ValueError, match="on_error"):
        ErrorPolicy("ignore")
