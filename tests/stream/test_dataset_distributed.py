"""Two real ranks (gloo, forked processes) x two DataLoader workers over uneven shards."""

import json
import socket
from collections import Counter

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader

from loffdata.stream.dataset import StreamingDataset
from tests.servers import write_uneven

SIZES = [9, 3, 5]  # 17 samples in 3 shards: fewer shards than ranks x workers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_rank(rank: int, world: int, port: int, root: str, out: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        ds = StreamingDataset(root, seed=11, batch_size=4, shuffle_buffer=3)
        batches = []
        for b in DataLoader(ds, batch_size=None, num_workers=2):
            batches.append(b["index"].tolist())
            dist.all_reduce(
                torch.ones(1)
            )  # a DDP-like collective per step: unequal counts would hang
        with open(f"{out}/rank{rank}.json", "w") as f:
            json.dump({"len": len(ds), "batches": batches, "rank": ds.rank_world()}, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two real ranks, each with two worker processes
def test_two_ranks_two_workers_uneven_shards(tmp_path):
    root = write_uneven(tmp_path / "ds", SIZES)
    out = tmp_path / "out"
    out.mkdir()
    # forked, not spawned: the ranks are real processes with their own gloo group, but
    # they start from this interpreter (torch imported) instead of importing it again
    mp.start_processes(
        _run_rank,
        args=(2, _free_port(), str(root), str(out)),
        nprocs=2,
        join=True,
        start_method="fork",
    )
    results = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["rank"] for r in results] == [[0, 2], [1, 2]]  # taken from torch.distributed
    assert [len(r["batches"]) for r in results] == [r["len"] for r in results] == [3, 3]
    per_rank = [sum(r["batches"], []) for r in results]
    assert [len(x) for x in per_rank] == [9, 9]
    counts = Counter(per_rank[0] + per_rank[1])
    assert set(counts) == set(range(17))  # everything once ...
    assert sum(counts.values()) - 17 == 1  # ... plus one padding repeat (18 = 2 x ceil(17 / 2))
