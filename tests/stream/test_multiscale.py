"""Multi-scale variable-batch sampling: determinism, tokens per batch, curriculum, exact
len(), equal batch counts across ranks, exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from loffdata.format.writer import WriterConfig, write_dataset
from loffdata.loader import LoffLoader
from loffdata.loader.multiscale import (
    MultiScaleConfig,
    MultiScaleLoader,
    allowed_grids,
    resize_grid,
    schedule,
)


def test_schedule_is_a_pure_function_covering_every_chunk():
    cfg = MultiScaleConfig(grids=(18, 14, 9), base_chunks=4, seed=3)
    a = schedule(cfg, epoch=2, num_chunks=500)
    assert a == schedule(cfg, epoch=2, num_chunks=500)
    assert a != schedule(cfg, epoch=3, num_chunks=500)
    assert a != schedule(
        MultiScaleConfig(grids=(18, 14, 9), base_chunks=4, seed=4), epoch=2, num_chunks=500
    )
    assert sum(n for _, n in a) == 500 and {g for g, _ in a} == {18, 14, 9}
    dropped = schedule(
        MultiScaleConfig(grids=(18, 14, 9), base_chunks=4, seed=3, drop_last=True),
        epoch=2,
        num_chunks=500,
    )
    assert all(n == cfg.chunks(g) for g, n in dropped) and sum(n for _, n in dropped) <= 500


def test_tokens_per_batch_near_constant():
    cfg = MultiScaleConfig(grids=(18, 14, 9), base_chunks=4)
    target = cfg.base_chunks * 18**2
    for grid, n in schedule(cfg, epoch=0, num_chunks=400)[:-1]:
        assert abs(n * grid**2 - target) / target <= 1 / (2 * n) + 1e-9, (grid, n)
    exact = MultiScaleConfig(grids=(8, 4, 2), base_chunks=1)  # (8/g)^2 integral: exact
    assert {n * g * g for g, n in schedule(exact, epoch=0, num_chunks=300)[:-1]} == {64}


def test_curriculum_grows_the_grid():
    cfg = MultiScaleConfig(grids=(18, 14, 9), curriculum_epochs=3)
    assert [allowed_grids(cfg, e) for e in range(4)] == [(9,), (9, 14), (9, 14, 18), (9, 14, 18)]
    assert {g for g, _ in schedule(cfg, epoch=0, num_chunks=50)} == {9}


def test_resize_grid_pools_down_and_interpolates_up():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    torch.testing.assert_close(resize_grid(x, 2), torch.nn.functional.avg_pool2d(x, 2))
    assert resize_grid(x, 6).shape == (1, 1, 6, 6) and resize_grid(x, 4) is x


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("ms") / "d"
    rng = np.random.default_rng(0)
    samples = (
        (f"s{i:04d}", rng.standard_normal((3, 8, 8)).astype(np.float32), i % 5) for i in range(203)
    )
    write_dataset(
        str(root),
        samples,
        config=WriterConfig(max_samples=37, dtype="float32"),
        classes=list("abcde"),
    )
    return str(root)


def _wrapped(data: str, *, rank: int = 0, world_size: int = 1) -> MultiScaleLoader:
    loader = LoffLoader(
        data, batch_size=4, augment=None, num_workers=0, seed=1, rank=rank, world_size=world_size
    )
    return MultiScaleLoader(loader, MultiScaleConfig(grids=(8, 4, 2), base_chunks=1, seed=5))


def test_len_exact_and_batches_at_their_grid(data):
    ms = _wrapped(data)
    ms.set_epoch(1)
    batches = list(ms)
    assert len(batches) == len(ms)
    for (x, y), (grid, n) in zip(batches, ms.plan(), strict=True):
        assert x.shape[-2:] == (grid, grid) and x.shape[0] == y.shape[0] <= 4 * n


def test_equal_batch_counts_and_grids_on_every_rank(data):
    plans = []
    for rank in range(3):
        ms = _wrapped(data, rank=rank, world_size=3)
        ms.set_epoch(2)
        counts = [x.shape[-1] for x, _ in ms]
        plans.append(counts)
        assert len(counts) == len(ms)
    assert plans[0] == plans[1] == plans[2]


def test_resume_mid_epoch_is_exact(data):
    full = _wrapped(data)
    full.set_epoch(3)
    want = [(x.clone(), y.clone()) for x, y in full]
    first = _wrapped(data)
    first.set_epoch(3)
    got, it = [], iter(first)
    for _ in range(5):
        x, y = next(it)
        got.append((x.clone(), y.clone()))
    state = first.state_dict()
    del it
    resumed = _wrapped(data)
    resumed.load_state_dict(state)
    got += [(x.clone(), y.clone()) for x, y in resumed]
    assert len(got) == len(want)
    for (a, b), (c, d) in zip(got, want, strict=True):
        torch.testing.assert_close(a, c)
        torch.testing.assert_close(b, d)


def test_multiscale_recipe_runs_and_resumes_exactly(data, tmp_path):
    from loffdata.train.trainer import CHECKPOINT_NAME, TrainConfig, train

    def config(out, **kw):
        return TrainConfig(
            train=data,
            out=str(out),
            model="deit_t",
            depth=1,
            embed_dim=32,
            num_heads=2,
            batch_size=8,
            epochs=2,
            warmup_epochs=0,
            device="cpu",
            progress=False,
            augment="none",
            multiscale={"grids": [8, 4], "base_chunks": 1},
            **kw,
        )

    whole = train(config(tmp_path / "a"))
    assert whole["completed"]
    train(config(tmp_path / "b", max_steps=whole["step"] // 2 + 1))
    resumed = train(config(tmp_path / "b", resume=True))
    assert resumed["step"] == whole["step"]
    a = torch.load(tmp_path / "a" / CHECKPOINT_NAME, weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / CHECKPOINT_NAME, weights_only=True)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k])


def _gloo_rank(rank: int, world: int, data: str, port: int, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        ms = _wrapped(
            data, rank=rank, world_size=world
        )  # rank and world size as DDP would give them
        ms.set_epoch(4)
        grids = []
        for x, _ in ms:
            dist.all_reduce(torch.ones(1))  # a rank with fewer batches would hang or fail here
            grids.append(x.shape[-1])
        gathered = [None] * world
        dist.all_gather_object(gathered, grids)
        if rank == 0:
            Path(out).write_text(json.dumps(gathered))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_gloo_ranks_step_together(data, tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "grids.json"
    mp.spawn(_gloo_rank, args=(2, data, port, str(out)), nprocs=2, join=True)
    a, b = json.loads(out.read_text())
    ref = _wrapped(data, rank=0, world_size=2)
    ref.set_epoch(4)
    assert a == b and len(a) == len(ref) > 2
