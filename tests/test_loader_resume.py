"""LoffLoader resumed with another batch size: its position and the rest it delivers."""

from __future__ import annotations

import itertools

import pytest

from loffdata.loader import LoffLoader


@pytest.fixture
def data(make_dataset):
    root, _ = make_dataset(n=52, shard_size=12, classes=4)
    return str(root)


def _loader(data: str, batch_size: int) -> LoffLoader:
    return LoffLoader(data, batch_size=batch_size, num_workers=0, augment=None, seed=3)


def test_resume_with_another_batch_size_counts_its_position_in_the_new_batches(data):
    full = [k for b in _loader(data, 8) for k in b.keys]
    first = _loader(data, 8)
    taken = [k for b in itertools.islice(first, 3) for k in b.keys]  # 24 of 52 samples
    state = first.state_dict()
    assert state["position"] == 3

    resumed = _loader(data, 4)  # 13 batches per epoch; 28 samples left: 7 batches
    resumed.load_state_dict(state)
    assert len(resumed) == 13 and resumed.state_dict()["position"] == 6
    it = iter(resumed)
    rest = [k for b in itertools.islice(it, 2) for k in b.keys]
    assert resumed.state_dict()["position"] == 8
    rest += [k for b in it for k in b.keys]
    assert taken + rest == full  # nothing lost, nothing twice, in the same order
    assert resumed.state_dict()["position"] == 13

    nxt = [k for b in resumed for k in b.keys]  # the epoch ended: the next pass is epoch 1
    assert resumed.epoch == 1 and sorted(nxt) == sorted(full) and nxt != full
