"""Per-worker state, for ``torchdata``'s ``StatefulDataLoader``.

``StatefulDataLoader`` asks the dataset copy *inside each worker* for its state (after
every item that worker produces) and, on resume, loads each worker's own state into the new
worker with the same id. :meth:`StreamingDataset.state_dict` called inside a worker
therefore returns a *worker state*: the epoch position the iteration started from (the
same :class:`~loffdata.stream.plan.PlanState` as a rank state) plus the worker's id, the
number of workers and how many items of its plan it has yielded. Loaded in the worker of
that id, the worker recomputes its plan (a pure function) and skips what it had yielded;
with the loader's own record of which worker delivers next, the resumed run continues
exactly. Schema::

    {"version": 2, <fingerprint>, "plan": PlanState.to_dict(),
     "worker": {"id": w, "num_workers": W, "yielded": n}}

Outside a worker, a state without ``delivered`` is only known for iterations in the same
process; anything else is an error (:func:`check_main_process_state`), never a silent 0.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import get_worker_info

from loffdata.errors import LoffError
from loffdata.stream.plan import PlanState, WorkerPlan

__all__ = [
    "WorkerResume",
    "worker_state",
    "load_worker_state",
    "skip_yielded",
    "check_main_process_state",
]


class WorkerResume:
    """What a loaded worker state asks of the next iteration: skip ``yielded`` items."""

    def __init__(self, worker: int, num_workers: int, yielded: int):
        self.worker, self.num_workers, self.yielded = worker, num_workers, yielded


def worker_state(
    base: PlanState, yielded: int, fingerprint: dict[str, Any], version: int
) -> dict[str, Any]:
    """The state of this worker's iteration (inside a DataLoader worker)."""
    info = get_worker_info()
    return {
        "version": version,
        **fingerprint,
        "plan": base.to_dict(),
        "worker": {"id": info.id, "num_workers": info.num_workers, "yielded": int(yielded)},
    }


def load_worker_state(state: dict[str, Any]) -> tuple[PlanState, WorkerResume]:
    """``(rank position, what to skip)`` of a worker state, checked against this worker.

    Raises:
        LoffError: outside a DataLoader worker, or in a worker of another id or count.
    """
    w = state["worker"]
    info = get_worker_info()
    if info is None or (info.id, info.num_workers) != (int(w["id"]), int(w["num_workers"])):
        where = (
            "outside a DataLoader worker"
            if info is None
            else f"in worker {info.id} of {info.num_workers}"
        )
        raise LoffError(
            f"this is the state of DataLoader worker {w['id']} of {w['num_workers']} (from "
            "torchdata's "
            f"StatefulDataLoader), loaded {where}: restore it through "
            "StatefulDataLoader.load_state_dict "
            "with the same num_workers, or checkpoint with LoffLoader.state_dict()"
        )
    return PlanState.from_dict(state["plan"]), WorkerResume(
        int(w["id"]), int(w["num_workers"]), int(w["yielded"])
    )


def skip_yielded(wplan: WorkerPlan, n: int) -> WorkerPlan:
    """The worker plan without its first ``n`` items (batches, or samples)."""
    if n > len(wplan.batch_sizes):
        raise LoffError(
            f"worker state says {n} items yielded, the worker's plan has {len(wplan.batch_sizes)}"
        )
    done = int(wplan.batch_sizes[:n].sum())
    return WorkerPlan(indices=wplan.indices[done:], batch_sizes=wplan.batch_sizes[n:])


def check_main_process_state(iterated: bool) -> None:
    """Refuses a state without ``delivered`` for an object not iterated in this process.

    Raises:
        LoffError: pointing to ``delivered=``, :class:`~loffdata.loader.LoffLoader` and
            ``StatefulDataLoader``.
    """
    if not iterated:
        raise LoffError(
            "StreamingDataset.state_dict(): this object was not iterated in this process, so it "
            "does not "
            "know how many items were delivered (a DataLoader with workers iterates copies of it). "
            "Pass "
            "delivered= (items your loop received; 0 at the start) and num_workers=, checkpoint "
            "with "
            "LoffLoader.state_dict(), or wrap the dataset in torchdata's StatefulDataLoader"
        )
