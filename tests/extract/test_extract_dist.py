"""Two ranks extracting one dataset (torchrun-equivalent: spawn + gloo + env variables)."""

from __future__ import annotations

import os
import socket
import warnings

import numpy as np
import pytest
import timm
import torch
import torch.multiprocessing as mp

from loffdata.extract.pipeline import ExtractConfig, RandomWeightsWarning, extract
from loffdata.format.manifest import Manifest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, out: str, ckpt: str) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    warnings.simplefilter("ignore", RandomWeightsWarning)
    manifests = extract(_config(out, ckpt))
    if manifests["train"].num_samples != 21:  # every rank gets the final manifests
        raise RuntimeError(f"rank {rank}: wrong manifest {manifests['train'].num_samples}")


def _config(out: str, ckpt: str) -> ExtractConfig:
    return ExtractConfig(
        out=out,
        model="test_resnet",
        img_size=64,
        checkpoint=ckpt,
        shapes_counts={"train": 21, "val": 6},
        shard_size=4,
        batch_size=4,
        workers=0,
        progress=False,
    )


@pytest.mark.slow
def test_two_ranks_one_manifest(tmp_path):
    out, ckpt = str(tmp_path / "out"), str(tmp_path / "w.pth")
    torch.save(timm.create_model("test_resnet").state_dict(), ckpt)
    mp.spawn(_rank_main, args=(2, _free_port(), out, ckpt), nprocs=2, join=True)
    train = Manifest.load(f"{out}/train")
    assert train.num_samples == 21 and [s.name for s in train.shards] == [
        f"shard-{j:06d}.tar" for j in range(6)
    ]
    assert train.stats.count == 21 * 4  # 2x2 grid per image, merged over both ranks
    assert Manifest.load(f"{out}/val").num_samples == 6
    ref = extract(_config(str(tmp_path / "single"), ckpt))["train"]  # one process, same weights
    assert [(s.name, s.samples) for s in ref.shards] == [(s.name, s.samples) for s in train.shards]
    np.testing.assert_allclose(ref.stats.mean, train.stats.mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ref.stats.std, train.stats.std, rtol=1e-4, atol=1e-6)
