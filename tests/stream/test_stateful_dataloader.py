"""torchdata's StatefulDataLoader around StreamingDataset (and a mix): exact resume with
workers; a state without the needed arguments is an error, never a silent 0."""

import pytest
from torch.utils.data import DataLoader

from loffdata.errors import LoffError
from loffdata.stream.dataset import StreamingDataset
from loffdata.stream.mix import Mix, MixedDataset
from tests.resume_helpers import assert_resumes_exactly
from tests.servers import write_shards

StatefulDataLoader = pytest.importorskip("torchdata.stateful_dataloader").StatefulDataLoader


@pytest.fixture
def uneven(tmp_path):
    return write_shards(tmp_path / "ds", 93, 10)  # 24 batches of 4 (the last one of 1)


@pytest.mark.parametrize("batch_size", [4, None])
def test_resume_with_two_workers_is_exact(uneven, batch_size):
    def make():
        ds = StreamingDataset(uneven, seed=3, shuffle_buffer=6, batch_size=batch_size)
        return StatefulDataLoader(ds, batch_size=None if batch_size else 3, num_workers=2)

    full = assert_resumes_exactly(make, [0, 5, 13], key=lambda b: tuple(b["index"].tolist()))
    got = [i for b in full for i in b]
    assert len(got) == 93 and sorted(got) == list(range(93))  # nothing lost, nothing twice


def test_resume_without_workers(uneven):
    def make():
        return StatefulDataLoader(
            StreamingDataset(uneven, seed=5, batch_size=4), batch_size=None, num_workers=0
        )

    assert len(assert_resumes_exactly(make, [0, 9], key=lambda b: tuple(b["index"].tolist()))) == 24


def test_resume_of_a_mix_and_of_a_resumed_run(uneven, tmp_path):
    other = write_shards(tmp_path / "b", 20, 6, offset=500)
    mix = Mix([str(uneven), str(other)], epoch_size=60)

    def make():
        return StatefulDataLoader(
            MixedDataset(mix, seed=1, batch_size=4), batch_size=None, num_workers=2
        )

    key = lambda b: tuple(b["index"].tolist())  # noqa: E731
    full = assert_resumes_exactly(make, [7], key=key)
    first = make()
    it = iter(first)
    [next(it) for _ in range(4)]
    second = make()
    second.load_state_dict(first.state_dict())
    it = iter(second)
    [next(it) for _ in range(3)]
    third = make()
    third.load_state_dict(second.state_dict())  # a state of a resumed run resumes again
    assert [key(b) for b in third] == full[7:]


def test_main_process_state_without_count_is_an_error(uneven):
    ds = StreamingDataset(uneven, batch_size=4)
    batches = iter(DataLoader(ds, batch_size=None, num_workers=2))
    [next(batches) for _ in range(5)]
    with pytest.raises(
        LoffError, match="not iterated in this process.*delivered=.*LoffLoader.*StatefulDataLoader"
    ):
        ds.state_dict()
    assert ds.state_dict(delivered=5, num_workers=2)["plan"]["delivered"] == 5


def test_worker_state_outside_its_worker_is_refused(uneven):
    dl = StatefulDataLoader(StreamingDataset(uneven, batch_size=4), batch_size=None, num_workers=2)
    it = iter(dl)
    next(it)
    state = dl.state_dict()
    worker = next(v for k, v in state["_snapshot"]["_worker_snapshots"].items())["dataset_state"]
    assert worker["worker"]["num_workers"] == 2
    with pytest.raises(LoffError, match="state of DataLoader worker .* StatefulDataLoader"):
        StreamingDataset(uneven, batch_size=4).load_state_dict(worker)
