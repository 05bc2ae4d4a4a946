"""One global order: the same (key, augmented sample) sequence for any workers, ranks and resume.

The epoch's order and every augmentation parameter are functions of (seed, epoch); the
layout only decides who delivers what (loffdata/stream/plan.py). Augmented features are
compared, not just keys: equal features mean equal augmentation parameters.
"""

import json
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from loffdata.format.writer import WriterConfig, write_dataset
from loffdata.loader.loader import LoffLoader
from loffdata.loader.multiscale import MultiScaleConfig, MultiScaleLoader
from loffdata.stream.mix import Mix, Source

WORKERS = (0, 1, 2, 3)
#: per-sample draws, the noise field included (keyed per sample); mixup/cutmix partners are
#: per group of the global order, checked per world size in tests/augment/test_global_params.py
#: (here the last global batch's padding, which depends on the world size, would be a partner)
PER_SAMPLE = {
    "hflip": 0.5,
    "crop": 1.0,
    "crop_scale": (0.25, 1.0),
    "jitter": 1.0,
    "brightness": 0.5,
    "noise": 1.0,
}
#: mixup/cutmix partners in groups of 2 consecutive samples of the global order
MIXING = {"preset": "loffta", "mixup": 0.5, "cutmix": 0.5, "num_classes": 3, "mix_group": 2}


def _write(root, n, per_shard, offset=0):
    rng = np.random.default_rng(offset)
    items = (
        (f"s{i:04d}", rng.standard_normal((3, 6, 6)).astype(np.float32), i % 3)
        for i in range(offset, offset + n)
    )
    write_dataset(
        str(root),
        items,
        config=WriterConfig(max_samples=per_shard, dtype="float32"),
        classes=list("abc"),
    )
    return str(root)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("order")
    return {"a": _write(base / "a", 45, 7), "b": _write(base / "b", 22, 5, offset=1000)}


def _sample_keys(batch):
    """One key per sample: ``batch.keys`` names every row, and a sample's views are adjacent."""
    return list(dict.fromkeys(batch.keys))


def _sequence(loader):
    """``[(keys, features)]`` of every batch, in delivery order."""
    out = []
    for batch in loader:
        out.append((_sample_keys(batch), batch[0].clone()))
    loader.close()
    return out


def _assert_same(a, b):
    assert [k for k, _ in a] == [k for k, _ in b]
    for (_, x), (_, y) in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def _assert_same_but_padding(a, b):
    """Equal but in the last global batch, where padding (which depends on the world size)
    may follow the same samples."""
    _assert_same(a[:-1], b[:-1])
    (ka, xa), (kb, xb) = a[-1], b[-1]
    n = min(len(ka), len(kb))
    assert ka[:n] == kb[:n]
    torch.testing.assert_close(xa[:n], xb[:n], rtol=0, atol=0)


def _plain(data, workers, shuffle):
    return LoffLoader(
        data["a"],
        batch_size=4,
        augment="loffta",
        views=2,
        num_workers=workers,
        seed=3,
        shuffle=shuffle,
        shuffle_buffer=8,
    )


def _mixed(data, workers, shuffle):
    mix = Mix([Source(data["a"], weight=2), Source(data["b"], weight=1)], epoch_size=48)
    return LoffLoader(
        mix,
        batch_size=4,
        augment="loffta",
        num_workers=workers,
        seed=3,
        shuffle=shuffle,
        shuffle_buffer=8,
    )


def _mixing(data, workers, shuffle):
    return LoffLoader(
        data["a"],
        batch_size=4,
        augment=MIXING,
        num_workers=workers,
        seed=3,
        shuffle=shuffle,
        shuffle_buffer=8,
    )


def _multiscale(data, workers, shuffle):
    loader = LoffLoader(
        data["a"],
        batch_size=2,
        augment="loffta",
        num_workers=workers,
        seed=3,
        shuffle=shuffle,
        shuffle_buffer=8,
    )
    return MultiScaleLoader(loader, MultiScaleConfig(grids=(6, 3), base_chunks=1, seed=5))


def _multiscale_sequence(ms):
    out = []
    for batch in ms:
        out.append((_sample_keys(batch), batch[0].clone()))
    ms.close()
    return out


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize(
    "make", [_plain, _mixed, _mixing], ids=["plain-2-views", "mix", "mixup-cutmix"]
)
def test_keys_and_augmentation_identical_for_any_num_workers(data, make, shuffle):
    runs = [_sequence(make(data, w, shuffle)) for w in WORKERS]
    for other in runs[1:]:
        _assert_same(runs[0], other)
    keys = [k for ks, _ in runs[0] for k in ks]
    assert len(keys) == len(set(keys))  # one key per sample (its views follow one another)
    if make is _plain and not shuffle:
        assert keys == [
            f"s{i:04d}" for i in range(45)
        ]  # shuffle=False: manifest order, any workers


@pytest.mark.parametrize("shuffle", [True, False])
def test_multiscale_batches_identical_for_any_num_workers(data, shuffle):
    runs = [_multiscale_sequence(_multiscale(data, w, shuffle)) for w in WORKERS]
    for other in runs[1:]:
        _assert_same(runs[0], other)


def _global(per_rank):
    """Global batches from each rank's ``[(keys, features)]``: rank parts concatenated."""
    return [
        (sum((r[t][0] for r in per_rank), []), torch.cat([r[t][1] for r in per_rank]))
        for t in range(len(per_rank[0]))
    ]


def _rank_loader(data, rank, world, workers):
    return LoffLoader(
        data["a"],
        batch_size=8 // world,
        augment=PER_SAMPLE,
        num_workers=workers,
        seed=3,
        shuffle_buffer=8,
        rank=rank,
        world_size=world,
    )


def test_resume_with_other_workers_and_world_size_gives_the_rest_of_the_order(data):
    full = _global([_sequence(_rank_loader(data, 0, 1, 0))])
    k = 2
    heads, states = [], []
    for r in range(2):  # two ranks in lockstep, 2 workers each, stop after k batches
        loader = _rank_loader(data, r, 2, 2)
        it = iter(loader)
        head = []
        for _ in range(k):
            batch = next(it)
            head.append((_sample_keys(batch), batch[0].clone()))
        heads.append(head)
        states.append(json.loads(json.dumps(loader.state_dict())))
        loader.close()
    assert states[0]["dataset"] == states[1]["dataset"]
    done = _global(heads)
    for world, workers in ((4, 3), (1, 2)):  # resumed on other ranks with other workers
        rest = []
        for r in range(world):
            loader = _rank_loader(data, r, world, workers)
            loader.load_state_dict(states[0])
            rest.append(_sequence(loader))
        _assert_same_but_padding(done + _global(rest), full)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_run(rank: int, world: int, port: int, root: str, out: str) -> None:
    """One rank of a gloo world of ``world``: its ``(keys, features)`` saved to ``out``."""
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        loader = LoffLoader(
            root,
            batch_size=8 // world,
            augment=PER_SAMPLE,
            num_workers=world % 3,
            seed=3,
            shuffle_buffer=8,
        )  # rank and world from torch.distributed
        got = []
        for batch in loader:
            got.append((_sample_keys(batch), batch[0].clone()))
            dist.all_reduce(torch.ones(1))  # a DDP-like collective per step
        loader.close()
        torch.save(
            {"keys": [k for k, _ in got], "x": [x for _, x in got]}, f"{out}/w{world}r{rank}.pt"
        )
    finally:
        dist.destroy_process_group()


def _run_rank(rank: int, ports: tuple[int, int], root: str, out: str) -> None:
    """Four spawned processes: a world of 4, then ranks 0 and 1 as a world of 2."""
    _rank_run(rank, 4, ports[0], root, out)
    if rank < 2:
        _rank_run(rank, 2, ports[1], root, out)


@pytest.mark.slow  # spawned ranks import torch on a shared 2-core machine
def test_global_batches_identical_for_world_size_1_2_4(data, tmp_path):
    """World 1 runs here (no process group: rank 0 of 1); worlds 4 and 2 in one spawn."""
    mp.spawn(_run_rank, args=((_free_port(), _free_port()), data["a"], str(tmp_path)), nprocs=4)
    runs = {1: _global([_sequence(_rank_loader(data, 0, 1, 1))])}
    for world in (2, 4):
        per_rank = []
        for r in range(world):
            saved = torch.load(tmp_path / f"w{world}r{r}.pt", weights_only=True)
            per_rank.append(list(zip(saved["keys"], saved["x"], strict=True)))
        runs[world] = _global(per_rank)
    assert len(runs[1]) == 6  # 45 samples in global batches of 8
    for world in (2, 4):  # the last global batch holds padding, which depends on the world size
        _assert_same_but_padding(runs[world], runs[1])
