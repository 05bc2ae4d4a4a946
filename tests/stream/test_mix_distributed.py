"""A mix over two real ranks (gloo, forked processes) x two DataLoader workers: equal batches."""

import json
import socket
from collections import Counter

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader

from loffdata.stream.mix import Mix, MixedDataset, Source
from tests.servers import write_shards, write_uneven


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_rank(rank: int, world: int, port: int, roots: list[str], out: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        mix = Mix([Source(roots[0], weight=2), Source(roots[1], weight=1)], epoch_size=27)
        ds = MixedDataset(mix, seed=4, batch_size=4, shuffle_buffer=5)
        batches = []
        for b in DataLoader(ds, batch_size=None, num_workers=2):
            batches.append(b["index"].tolist())
            dist.all_reduce(
                torch.ones(1)
            )  # a DDP-like collective per step: unequal counts would hang
        with open(f"{out}/rank{rank}.json", "w") as f:
            json.dump(
                {
                    "len": len(ds),
                    "batches": batches,
                    "sources": ds.source_of(sum(batches, [])).tolist(),
                },
                f,
            )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two real ranks, each with two worker processes
def test_two_ranks_two_workers_mixed_sources(tmp_path):
    roots = [
        str(write_uneven(tmp_path / "a", [9, 3, 5])),
        str(write_shards(tmp_path / "b", 7, 3, offset=100)),
    ]
    out = tmp_path / "out"
    out.mkdir()
    # forked, not spawned: the ranks are real processes with their own gloo group, but
    # they start from this interpreter (torch imported) instead of importing it again
    mp.start_processes(
        _run_rank, args=(2, _free_port(), roots, str(out)), nprocs=2, join=True, start_method="fork"
    )
    results = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert (
        [len(r["batches"]) for r in results] == [r["len"] for r in results] == [4, 4]
    )  # ceil(14 / 4)
    assert [len(sum(r["batches"], [])) for r in results] == [14, 14]  # 27 padded to 28
    sources = Counter(results[0]["sources"] + results[1]["sources"])
    assert sources[0] + sources[1] == 28 and sources[0] in (18, 19)  # 18 + 9 of the mix, one repeat
