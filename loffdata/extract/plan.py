"""Which shards a rank writes: a pure function of the input size, minus the shards already done."""

from __future__ import annotations

import math

from loffdata.extract.runtime import Runtime
from loffdata.extract.sink import sidecar_name

__all__ = ["pending_shards", "plan_shards"]


def plan_shards(
    num_items: int, shard_size: int, *, rank: int = 0, world_size: int = 1
) -> dict[int, range]:
    """Shard index -> image index range, for the shards owned by ``rank``.

    Shard ``j`` holds images ``[j*shard_size, (j+1)*shard_size)``; rank ``r`` owns ``j % world_size
    == r``.
    """
    num_shards = math.ceil(num_items / shard_size)
    return {
        j: range(j * shard_size, min(num_items, (j + 1) * shard_size))
        for j in range(rank, num_shards, world_size)
    }


def pending_shards(rt: Runtime, split: str, num_items: int) -> dict[int, range]:
    """This rank's planned shards of ``split`` that have no sidecar yet (stale temp files
    removed)."""
    plan = plan_shards(
        num_items, rt.config.shard_size, rank=rt.ctx.rank, world_size=rt.ctx.world_size
    )
    folder = f"{rt.root}/{split}"
    rt.fs.invalidate_cache()
    present = set(rt.fs.ls(folder, detail=False)) if rt.fs.isdir(folder) else set()
    names = {p.rstrip("/").rsplit("/", 1)[-1] for p in present}
    for name in names:
        if (
            name.startswith(f".{rt.config.prefix}-")
            and ".tmp-" in name
            and _tmp_owner(name, rt.config.prefix) in plan
        ):
            rt.fs.rm(f"{folder}/{name}")
    return {j: r for j, r in plan.items() if sidecar_name(rt.config.prefix, j) not in names}


def _tmp_owner(name: str, prefix: str) -> int:
    digits = name[len(prefix) + 2 :].split(".", 1)[0]
    return int(digits) if digits.isdigit() else -1
