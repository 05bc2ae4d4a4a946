"""Weighted mixing: proportions, epoch policies, determinism, exact resume, specs, classes,
per-source storage options, LoffLoader, directories of datasets."""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from loffdata.errors import LoffError
from loffdata.format.writer import WriterConfig, write_dataset
from loffdata.loader import LoffLoader
from loffdata.stream.dataset import StreamingDataset
from loffdata.stream.discover import DatasetDirectoryError
from loffdata.stream.mix import Mix, MixedDataset, Source
from loffdata.stream.mixplan import epoch_counts, source_stream
from tests.resume_helpers import assert_resumes_exactly, collect
from tests.servers import make_items, s3_server, write_shards  # noqa: F401


def write(root, n, per_shard, *, offset=0, classes=None, shape=(4, 3, 3), extras=False):
    items = [
        (k, f, int(k[1:]) % len(classes) if classes else None, *rest)
        for k, f, _, *rest in make_items(n, offset=offset, shape=shape, extras=extras)
    ]
    write_dataset(str(root), items, config=WriterConfig(max_samples=per_shard), classes=classes)
    return str(root)


@pytest.fixture
def two(tmp_path):
    """Source 0: 120 samples (keys s00000..), source 1: 30 samples (keys s01000..)."""
    return write(tmp_path / "a", 120, 25), write(tmp_path / "b", 30, 7, offset=1000)


def keys(ds):
    out = []
    for item in ds:
        out += item["key"] if isinstance(item["key"], list) else [item["key"]]
    return out


def test_epoch_counts_and_policies():
    assert epoch_counts([120, 30], None, "total").tolist() == [120, 30]
    assert epoch_counts([120, 30], [1, 1], "total").tolist() == [75, 75]
    assert epoch_counts([120, 30], [1, 1], "smallest").tolist() == [30, 30]
    assert epoch_counts([120, 30], [3, 1], 101).tolist() == [76, 25]
    assert epoch_counts([10, 10, 10], [1, 1, 1], 10).sum() == 10
    with pytest.raises(ValueError, match="epoch_size"):
        epoch_counts([1], None, "largest")


def test_proportions_hold_over_the_epoch_and_within_windows(two):
    ds = MixedDataset(
        Mix([Source(two[0], weight=3), Source(two[1], weight=1)], epoch_size=200), seed=5
    )
    items = list(ds)
    src = ds.source_of([x["index"] for x in items])
    assert len(items) == len(ds) == 200 and Counter(src.tolist()) == {
        0: 150,
        1: 50,
    }  # exact per epoch
    for lo in range(
        0, 200, 40
    ):  # every 40 consecutive samples: 30 +- sampling error (binomial sd 2.7)
        assert abs(int((src[lo : lo + 40] == 0).sum()) - 30) <= 8
    by_key = Counter(x["key"] for x in items)
    assert set(by_key[f"s{1000 + i:05d}"] for i in range(30)) == {
        1,
        2,
    }  # 50 of 30: each once or twice
    assert all(x["key"] == f"s{int(x['features'].flat[0]):05d}" for x in items)  # the right sample


def test_undersampled_source_moves_through_its_data_across_epochs(two):
    ds = MixedDataset(Mix([two[0], two[1]], epoch_size=50), seed=2)  # by size: 40 of 120 per epoch
    seen = []
    for epoch in range(3):
        ds.set_epoch(epoch)
        seen += [k for k in keys(ds) if k < "s01000"]
    assert sorted(seen) == [f"s{i:05d}" for i in range(120)]  # three epochs: every sample once
    streams = [
        source_stream([25, 25], 60, seed=0, source=0, epoch=e, shuffle=True) for e in range(5)
    ]
    assert Counter(np.concatenate(streams).tolist()) == {
        i: 6 for i in range(50)
    }  # 5 x 60 = 6 passes
    assert set(Counter(streams[1].tolist()).values()) == {1, 2}  # within an epoch: once or twice


def test_deterministic_in_seed_and_epoch(two):
    mix = Mix([Source(two[0], weight=1), Source(two[1], weight=1)], epoch_size="smallest")
    a = keys(MixedDataset(mix, seed=3))
    assert (
        a == keys(MixedDataset(mix, seed=3)) and len(a) == 60 and len(set(a)) == 60
    )  # smallest: no repeats
    other = MixedDataset(mix, seed=3)
    other.set_epoch(1)
    assert keys(other) != a and keys(MixedDataset(mix, seed=4)) != a


def test_resume_exactly_with_workers(two):
    mix = Mix([Source(two[0], weight=2), Source(two[1], weight=1)], epoch_size=90)

    def make(workers):
        ds = MixedDataset(mix, seed=9, batch_size=4, shuffle_buffer=8)
        return ds, DataLoader(ds, batch_size=None, num_workers=workers)

    class Run:  # a DataLoader with the dataset's state at the consumer's count
        def __init__(self, workers):
            self.ds, self.dl = make(workers)
            self.workers = workers

        def __iter__(self):
            return iter(self.dl)

    full = assert_resumes_exactly(
        lambda: Run(2),
        [0, 5, 11],
        state_of=lambda r, k: r.ds.state_dict(delivered=k, num_workers=r.workers),
        load=lambda r, s: r.ds.load_state_dict(s),
        make_resumed=lambda: Run(1),  # fewer workers after the restart
    )
    assert len(full) == 23  # ceil(90 / 4)
    srcs = MixedDataset(mix, seed=9).source_of([i for b in full for i in b])
    assert Counter(srcs.tolist()) == {0: 60, 1: 30}  # proportions exact under resume too


def test_feature_specs_must_agree_and_extras_are_common(tmp_path):
    a = write(tmp_path / "a", 6, 3, extras=True)
    b = write(tmp_path / "b", 6, 3, shape=(4, 2, 2))
    with pytest.raises(
        LoffError, match=r"one feature spec.*float16\[4, 3, 3\].*float16\[4, 2, 2\]"
    ):
        MixedDataset(Mix([a, b]))
    c = write(tmp_path / "c", 6, 3)
    ds = MixedDataset(Mix([a, c]), batch_size=4)
    assert ds.shards.extras == {} and "pooled" not in next(iter(ds))  # only extras all sources have
    with pytest.raises(ValueError, match="every source"):
        Mix([Source(a, weight=1), Source(c)])


def test_classes_unified_by_name_or_kept(tmp_path):
    a = write(tmp_path / "a", 6, 3, classes=["cat", "dog"])
    b = write(tmp_path / "b", 6, 3, offset=1000, classes=["dog", "bird"])
    ds = MixedDataset(Mix([a, b]), shuffle=False)
    assert ds.classes == ["cat", "dog", "bird"]
    for x in ds:
        i = int(x["features"].flat[0])
        name = (["cat", "dog"] if i < 1000 else ["dog", "bird"])[i % 2]
        assert ds.classes[x["label"]] == name
    kept = MixedDataset(Mix([a, b], classes="separate"), shuffle=False)
    assert kept.classes is None and kept.source_classes == [["cat", "dog"], ["dog", "bird"]]
    assert all(x["label"] == int(x["features"].flat[0]) % 2 for x in kept)  # as stored
    with pytest.raises(LoffError, match="needs class names"):
        MixedDataset(Mix([a, write(tmp_path / "c", 2, 2)], classes="union"))


def test_per_source_storage_options_and_stats(tmp_path, s3_server):  # noqa: F811
    local = write(tmp_path / "a", 20, 8)
    url = s3_server.upload(Path(write(tmp_path / "b", 10, 4, offset=1000)), "loff", "mix")
    mix = Mix(
        [Source(local, weight=1), Source(url, weight=1, storage_options=s3_server.storage_options)],
        epoch_size=20,
    )
    ds = MixedDataset(mix, seed=1, batch_size=5)  # no dataset-wide options: S3 has its own
    batches = list(ds)
    got = Counter(k[:3] for b in batches for k in b["key"])
    assert got == {"s00": 10, "s01": 10} and len(batches) == len(ds) == 4
    assert all(s is not None for s in ds.source_stats)
    assert (
        ds.source_stats[1].mean.mean() > 1000 > ds.source_stats[0].mean.mean()
    )  # features = index
    np.testing.assert_allclose(
        ds.stats().mean, (ds.source_stats[0].mean + ds.source_stats[1].mean) / 2
    )


def test_loff_loader_accepts_a_mix(tmp_path):
    a = write(tmp_path / "a", 12, 5, classes=["cat", "dog"])
    b = write(tmp_path / "b", 12, 5, offset=1000, classes=["dog", "bird"])
    loader = LoffLoader(Mix([a, b]), batch_size=4, num_workers=2, augment="loffta", seed=0)
    batches = list(loader)
    assert len(batches) == len(loader) == 6 and loader.manifest.num_classes == 3
    assert torch.cat([b.labels for b in batches]).max() == 2
    state = None
    for k, _ in enumerate(loader):
        if k == 2:
            state = loader.state_dict()
            break
    resumed = LoffLoader(Mix([a, b]), batch_size=4, num_workers=1, augment=None, seed=0)
    resumed.load_state_dict(state)
    assert len(list(resumed)) == 3


def test_directory_of_datasets_as_a_mix(tmp_path):
    write(tmp_path / "all" / "one", 5, 5)
    write(tmp_path / "all" / "two", 3, 5, offset=1000)
    with pytest.raises(DatasetDirectoryError, match="Mix"):
        StreamingDataset(tmp_path / "all")
    ds = MixedDataset(Mix.from_directory(str(tmp_path / "all")), shuffle=False)
    assert sorted(keys(ds)) == [f"s{i:05d}" for i in range(5)] + [
        f"s{i:05d}" for i in range(1000, 1003)
    ]
    assert collect(ds) == collect(
        MixedDataset(Mix.from_directory(str(tmp_path / "all")), shuffle=False)
    )


@pytest.mark.parametrize("epoch_size", [20, "total"])
def test_an_empty_source_with_weight_is_refused_and_weight_0_agrees_with_len(tmp_path, epoch_size):
    from tests.craft import archive, sample, write_crafted

    full = write_crafted(
        tmp_path / "full", {"a.tar": archive(*[sample(f"k{i}", i) for i in range(8)])}, {"a.tar": 8}
    )
    empty = write_crafted(tmp_path / "empty", {"e.tar": archive()}, {"e.tar": 0})
    with pytest.raises(LoffError, match=r"source 'empty' of the mix has no samples but weight 1"):
        MixedDataset(
            Mix(
                [Source(str(full), 3.0), Source(str(empty), 1.0, name="empty")],
                epoch_size=epoch_size,
            ),
            batch_size=4,
        )
    ds = MixedDataset(
        Mix([Source(str(full), 3.0), Source(str(empty), 0.0)], epoch_size=epoch_size), batch_size=4
    )
    assert len(list(ds)) == len(ds) == (5 if epoch_size == 20 else 2)
