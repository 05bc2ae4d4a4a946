"""StreamingDataset on local shards: items, batches, len, determinism, sources, resumption."""

import json
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from loffdata.errors import SampleError
from loffdata.format.codec import Quantized
from loffdata.format.writer import WriterConfig, write_dataset
from loffdata.stream.dataset import StreamingDataset
from tests.resume_helpers import assert_resumes_exactly, collect
from tests.servers import make_items, write_shards


@pytest.fixture
def uneven(tmp_path):
    """23 samples in shards of 5, 5, 5, 5, 3."""
    return write_shards(tmp_path / "ds", 23, 5)


def indices(items):
    out = []
    for x in items:
        out += x["index"].tolist() if torch.is_tensor(x["index"]) else [x["index"]]
    return out


def loader(ds, workers):
    return DataLoader(ds, batch_size=None, num_workers=workers)


def test_items_carry_their_sample(uneven):
    items = list(StreamingDataset(uneven, seed=3, shuffle_buffer=4))
    assert sorted(x["index"] for x in items) == list(range(23))
    for x in items:
        assert x["key"] == f"s{x['index']:05d}" and x["label"] == x["index"] % 3
        assert isinstance(x["features"], np.ndarray) and x["features"].dtype == np.float16
        assert np.all(x["features"] == x["index"]) and x["features"].shape == (4, 3, 3)


def test_no_shuffle_is_manifest_order(uneven):
    assert indices(StreamingDataset(uneven, shuffle=False)) == list(range(23))


def test_determinism_and_epochs(uneven):
    a = StreamingDataset(uneven, seed=7, shuffle_buffer=6)
    first = indices(a)
    assert indices(StreamingDataset(uneven, seed=7, shuffle_buffer=6)) == first
    a.set_epoch(1)
    second = indices(a)
    assert second != first and sorted(second) == sorted(first)
    assert indices(StreamingDataset(uneven, seed=8, shuffle_buffer=6)) != first


@pytest.mark.parametrize(
    "batch_size,drop_last,world",
    [(None, False, 1), (4, False, 1), (4, True, 1), (3, False, 2), (5, True, 3)],
)
def test_len_is_exact_and_independent_of_workers(uneven, batch_size, drop_last, world):
    for rank in range(world):
        lengths = set()
        for workers in (0, 1, 2, 3):
            ds = StreamingDataset(
                uneven, batch_size=batch_size, drop_last=drop_last, rank=rank, world_size=world
            )
            got = list(loader(ds, workers))
            lengths.add(len(got))
            assert len(got) == len(ds)
        assert len(lengths) == 1


def test_loader_delivers_the_planned_order(uneven):
    ds = StreamingDataset(uneven, seed=1, batch_size=3, shuffle_buffer=4)
    got = [tuple(b["index"].tolist()) for b in loader(ds, 2)]
    plans = [ds.worker_plan(w, 2) for w in range(2)]
    queues = [np.split(p.indices, np.cumsum(p.batch_sizes)[:-1]) for p in plans]
    expected = [
        tuple(q[j].tolist()) for j in range(max(map(len, queues))) for q in queues if j < len(q)
    ]
    assert got == expected and sorted(sum(got, ())) == list(range(23))


def test_workers_shuffle_with_different_streams(tmp_path):
    root = write_shards(tmp_path / "ds", 40, 20)
    ds = StreamingDataset(root, seed=0, shuffle_buffer=20)
    p0, p1 = ds.worker_plan(0, 2), ds.worker_plan(1, 2)
    assert not np.array_equal(np.argsort(p0.indices), np.argsort(p1.indices))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "int8"])
def test_batches_in_storage_dtype(tmp_path, dtype):
    root = write_shards(tmp_path / dtype, 10, 4, dtype=dtype, extras=True)
    batches = list(StreamingDataset(root, batch_size=4, shuffle=False))
    assert [b["features"].shape[0] for b in batches] == [4, 4, 2]
    b = batches[0]
    assert b["features"].dtype == getattr(torch, dtype) and b["features"].shape == (4, 4, 3, 3)
    assert b["label"].dtype == torch.int64 and b["label"].tolist() == [0, 1, 2, 0]
    assert b["index"].tolist() == [0, 1, 2, 3] and b["key"] == [
        "s00000",
        "s00001",
        "s00002",
        "s00003",
    ]
    assert b["pooled"].shape == (4, 4) and b["pooled"][:, 0].tolist() == [0, 1, 2, 3]
    if dtype == "int8":
        assert b["scale"].shape == (4, 4) and b["scale"].dtype == torch.float32
        values = b["features"].float() * b["scale"][:, :, None, None]
        torch.testing.assert_close(values[:, 0, 0, 0], torch.tensor([0.0, 1, 2, 3]))
    else:
        assert b["features"].float()[:, 0, 0, 0].tolist() == [0, 1, 2, 3]


def test_unbatched_int8_gives_quantized(tmp_path):
    root = write_shards(tmp_path / "q", 3, 4, dtype="int8")
    x = next(iter(StreamingDataset(root, shuffle=False)))
    assert isinstance(x["features"], Quantized)


def test_batches_from_workers_live_in_shared_memory(uneven):
    ds = StreamingDataset(uneven, batch_size=4)
    assert not next(iter(ds))["features"].is_shared()  # no shared memory needed in-process
    batches = list(loader(ds, 2))
    assert all(b["features"].is_shared() for b in batches)


def test_missing_labels_are_minus_one(tmp_path):
    write_dataset(str(tmp_path), [(f"k{i}", np.zeros((2, 1, 1)), None) for i in range(3)])
    assert next(iter(StreamingDataset(tmp_path, batch_size=3)))["label"].tolist() == [-1, -1, -1]
    assert next(iter(StreamingDataset(tmp_path)))["label"] is None


def test_features_must_match_the_manifest(uneven):
    m = json.loads((uneven / "manifest.json").read_text())
    m["features"]["shape"] = [4, 3, 4]
    (uneven / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(SampleError) as err:
        list(StreamingDataset(uneven, shuffle=False))
    assert (
        "shard-000000.tar" in str(err.value)
        and "s00000" in str(err.value)
        and "manifest says" in str(err.value)
    )


def test_sources_list_brace_and_no_manifest(uneven):
    names = sorted(p.name for p in uneven.glob("*.tar"))
    urls = [str(uneven / n) for n in names]
    expected = indices(StreamingDataset(uneven, seed=2))
    assert indices(StreamingDataset(urls, seed=2)) == expected
    assert indices(StreamingDataset(str(uneven / "shard-{000000..000004}.tar"), seed=2)) == expected
    assert indices(StreamingDataset(str(uneven / "manifest.json"), seed=2)) == expected
    (uneven / "manifest.json").unlink()
    scanned = StreamingDataset(urls, seed=2)  # counts read from the shards themselves
    assert scanned.shards.counts == [5, 5, 5, 5, 3] and indices(scanned) == expected


def test_sub_list_of_shards_uses_the_sibling_manifest(uneven):
    ds = StreamingDataset(
        [str(uneven / "shard-000004.tar"), str(uneven / "shard-000001.tar")], shuffle=False
    )
    assert ds.shards.counts == [3, 5]
    items = list(ds)
    assert [x["index"] for x in items] == list(
        range(8)
    )  # global index: position in this list's order
    assert [x["key"] for x in items] == [f"s{i:05d}" for i in [20, 21, 22, 5, 6, 7, 8, 9]]


def test_rank_from_arguments(uneven):
    per_rank = [indices(StreamingDataset(uneven, rank=r, world_size=3, seed=1)) for r in range(3)]
    assert {len(x) for x in per_rank} == {8}
    counts = Counter(sum(per_rank, []))
    assert set(counts) == set(range(23)) and sum(counts.values()) == 24


def test_invalid_arguments(uneven):
    with pytest.raises(ValueError):
        StreamingDataset(uneven, on_error="ignore")
    with pytest.raises(ValueError):
        StreamingDataset(uneven, partial="wrap")
    with pytest.raises(ValueError):
        len(StreamingDataset(uneven, rank=2, world_size=2))


# -- resumption ------------------------------------------------------------------------------


def test_resume_direct_iteration(uneven):
    def make():
        return StreamingDataset(uneven, seed=5, shuffle_buffer=4)

    full = assert_resumes_exactly(make, [0, 1, 7, 22, 23])
    assert sorted(full) == list(range(23))


def test_resume_batched_in_a_later_epoch(uneven):
    def make():
        ds = StreamingDataset(uneven, seed=5, shuffle_buffer=4, batch_size=4)
        ds.set_epoch(3)
        return ds

    assert_resumes_exactly(make, [1, 3, 5, 6])


@pytest.mark.parametrize("workers,new_workers", [(2, 2), (2, 3), (2, 0), (0, 2)])
def test_resume_with_dataloader_workers(uneven, workers, new_workers):
    def make(w=workers):
        return loader(StreamingDataset(uneven, seed=9, shuffle_buffer=5, batch_size=3), w)

    def state_of(dl, k):
        return dl.dataset.state_dict(delivered=k, num_workers=workers)

    def load(dl, state):
        dl.dataset.load_state_dict(state)

    # a changed worker count still continues in the same order (see docs/streaming.md)
    full = assert_resumes_exactly(
        make, [1, 4, 7], make_resumed=lambda: make(new_workers), state_of=state_of, load=load
    )
    assert sorted(sum(full, ())) == list(range(23))


def test_resume_twice(uneven):
    def ds():
        return StreamingDataset(uneven, seed=1, batch_size=2)

    full = collect(loader(ds(), 2))
    first = ds()
    it = iter(loader(first, 2))
    head = [tuple(next(it)["index"].tolist()) for _ in range(3)]
    second = ds()
    second.load_state_dict(json.loads(json.dumps(first.state_dict(delivered=3, num_workers=2))))
    it = iter(loader(second, 3))
    middle = [tuple(next(it)["index"].tolist()) for _ in range(4)]
    third = ds()
    third.load_state_dict(second.state_dict(delivered=4, num_workers=3))
    assert (
        third.state_dict(delivered=0)["plan"]["start"] == 14
    )  # 7 batches of 2 into the global order
    assert head + middle + collect(loader(third, 1)) == full


def test_state_from_another_dataset_is_refused(uneven, tmp_path):
    other = write_shards(tmp_path / "other", 10, 5)
    state = StreamingDataset(uneven).state_dict(delivered=0)
    with pytest.raises(ValueError, match="num_samples"):
        StreamingDataset(other).load_state_dict(state)
    with pytest.raises(ValueError, match="seed"):
        StreamingDataset(uneven, seed=1).load_state_dict(state)


def test_set_epoch_forgets_a_state_of_another_epoch(uneven):
    ds = StreamingDataset(uneven)
    it = iter(ds)
    [next(it) for _ in range(5)]
    state = ds.state_dict()
    assert state["plan"]["delivered"] == 5 and state["plan"]["epoch"] == 0
    fresh = StreamingDataset(uneven)
    fresh.load_state_dict(state)
    assert len(list(fresh)) == 18
    fresh.set_epoch(1)
    assert len(list(fresh)) == 23


def test_uneven_writer_prefixes(tmp_path):
    # two writers with different shard sizes into one directory, one manifest listing both
    a = write_dataset(str(tmp_path), make_items(7), config=WriterConfig(prefix="a", max_samples=7))
    b = write_dataset(
        str(tmp_path / "b"), make_items(3, offset=7), config=WriterConfig(prefix="b", max_samples=1)
    )
    for p in (tmp_path / "b").glob("*.tar"):
        p.rename(tmp_path / p.name)
    a.shards += b.shards
    a.save(str(tmp_path))
    ds = StreamingDataset(tmp_path, batch_size=2, rank=1, world_size=2)
    assert len(ds) == 3 and len(list(loader(ds, 2))) == 3


def test_shuffled_batches_keep_rows_consistent(uneven):
    ds = StreamingDataset(uneven, seed=6, batch_size=4, shuffle_buffer=5)
    for b in loader(ds, 2):
        idx = b["index"]
        assert (b["features"].float()[:, 0, 0, 0] == idx.float()).all()
        assert (b["label"] == idx % 3).all() and b["key"] == [f"s{i:05d}" for i in idx.tolist()]
