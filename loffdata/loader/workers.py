"""DataLoader worker processes: a worker that dies becomes one documented error; a cheap start.

Without this, a dead worker surfaces as whichever exception happened to notice first: a
``RuntimeError`` raised by torch's ``SIGCHLD`` handler at an arbitrary line of the training
loop, or a bare ``ConnectionResetError`` / ``EOFError`` while a batch's shared memory is
received from the dead process. The loader instead raises
:class:`~loffdata.errors.WorkerDiedError`, naming the pid and the signal or exit code, from
its next batch request (:func:`translate_worker_death`), and :func:`defer_sigchld` keeps
torch's handler from raising inside user code (worker deaths are then found by the batch
request itself, at the latest after torch's 5-second status check).
"""

from __future__ import annotations

import contextlib
import gc
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

from loffdata.compat import worker_processes
from loffdata.errors import WorkerDiedError

__all__ = [
    "defer_sigchld",
    "dead_workers",
    "translate_worker_death",
    "start_pass",
    "gc_frozen",
    "warm_worker_imports",
]

#: exceptions that a dead worker produces on the consumer side
_SYMPTOMS = (ConnectionError, EOFError)


def defer_sigchld() -> None:
    """Wraps the current ``SIGCHLD`` handler so that the errors it raises are dropped
    (the next batch request reports the dead worker instead). Main thread only; once."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGCHLD"):
        return
    previous = signal.getsignal(signal.SIGCHLD)
    if getattr(previous, "loffdata_deferred", False) or not callable(previous):
        return

    def handler(signum: int, frame: Any) -> None:
        with contextlib.suppress(RuntimeError):  # a worker died: the next batch request says so
            previous(signum, frame)

    handler.loffdata_deferred = True  # type: ignore[attr-defined]
    signal.signal(signal.SIGCHLD, handler)


def dead_workers(it: Any, wait_s: float = 0.0) -> list[tuple[int, int]]:
    """``(pid, exitcode)`` of the DataLoader iterator's workers that died, waiting up to
    ``wait_s`` for one to be reaped (a negative exit code is the signal number)."""
    workers = worker_processes(it)
    deadline = time.monotonic() + wait_s
    while True:
        dead = [(w.pid, w.exitcode) for w in workers if w.exitcode not in (None, 0)]
        if dead or time.monotonic() >= deadline:
            return dead
        time.sleep(0.02)


def translate_worker_death(it: Any, err: BaseException) -> BaseException:
    """The :class:`WorkerDiedError` that ``err`` is a symptom of, or ``err`` itself."""
    torch_says = isinstance(err, RuntimeError) and "DataLoader worker" in str(err)
    if not (torch_says or isinstance(err, _SYMPTOMS)):
        return err
    dead = dead_workers(it, wait_s=5.0)
    if not dead:
        return err
    return WorkerDiedError([pid for pid, _ in dead], [code for _, code in dead])


def start_pass(dl: Any) -> Iterator[Any]:
    """``iter(dl)``; persistent workers are told to start a pass and must answer, so one that
    died while idle between passes is found here: it becomes :class:`WorkerDiedError`
    (torch raises a ``RuntimeError`` naming the pid)."""
    try:
        return iter(dl)
    except Exception as err:
        died = translate_worker_death(getattr(dl, "_iterator", None), err)
        if died is err:
            raise
        raise died from err


@contextlib.contextmanager
def gc_frozen() -> Iterator[None]:
    """``gc.freeze()`` around the fork of the workers: their garbage collector then skips
    every object inherited from this process instead of touching (and so copying) its pages.
    Left alone if the application froze objects itself."""
    mine = gc.get_freeze_count() == 0
    if mine:
        gc.freeze()
    try:
        yield
    finally:
        if mine:
            gc.unfreeze()


def warm_worker_imports() -> None:
    """Imports what every worker would otherwise import on its first batch, once, here,
    before the workers are forked (it shortens a fresh loader's first batch)."""
    import hmac  # noqa: F401  (multiprocessing's authentication when sharing memory handles)
    import multiprocessing.resource_sharer  # noqa: F401
    import secrets  # noqa: F401

    import fsspec.implementations.local  # noqa: F401
    import numpy.random  # noqa: F401
