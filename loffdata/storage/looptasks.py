"""Fetches run as tasks on fsspec's IO loop, started from that loop without a thread hop.

A prefetcher keeps many requests in flight for a reader thread. Most requests are started
by the completion of another (the next planned range takes the freed slot), and that
completion runs on the IO loop's own thread. Started with ``run_coroutine_threadsafe``,
each such request would write to the loop's wake-up pipe and wait a loop turn, and its
result would cross back through another callback: per request a system call, a wake-up of
the loop and two lock hand-overs with the reader, for ranges that are often a single sample.
Measured against nginx (docs/benchmarks.md), that hop cost about as much CPU as the
request itself.

:class:`LoopTasks` starts a coroutine as a task at once when called on the loop's thread,
and hands it over with one ``call_soon_threadsafe`` only from another thread (a read nobody
planned, a new plan). Each task gets a :class:`concurrent.futures.Future` for the thread
that waits on it; cancelling that future cancels the task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from concurrent.futures import Future, InvalidStateError
from typing import Any

__all__ = ["LoopTasks"]


class LoopTasks:
    """Starts coroutines as tasks on ``loop`` (running in another thread, or this one).

    Args:
        loop: the event loop the tasks run on.

    Attributes:
        started_here: tasks started on the loop's own thread (no hand-over).
        handed_over: tasks handed over from another thread (one ``call_soon_threadsafe``
            each).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.started_here = 0
        self.handed_over = 0

    def here(self) -> bool:
        """Whether the caller runs on the loop (in its thread, inside a callback or task)."""
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    def start(
        self, make: Callable[[], Coroutine[Any, Any, Any]], finished: Callable[[], None]
    ) -> Future:
        """Runs ``make()`` as a task; returns the future of its result.

        ``finished`` is called on the loop once the task has ended (or was cancelled before
        it began), after its future is settled: where the caller frees the task's slot and
        starts the next one. ``make()`` should not raise: a failure is delivered as a value.
        """
        fut: Future = Future()
        if self.here():
            self.started_here += 1
            self._run(make, fut, finished)
        else:
            self.handed_over += 1
            self.loop.call_soon_threadsafe(self._run, make, fut, finished)
        return fut

    def _run(self, make: Callable, fut: Future, finished: Callable[[], None]) -> None:
        if fut.cancelled():  # released before it started
            finished()
            return
        task = self.loop.create_task(make())

        def cancel_task(f: Future) -> None:
            if f.cancelled():
                self.loop.call_soon_threadsafe(task.cancel)

        fut.add_done_callback(cancel_task)
        task.add_done_callback(lambda t: self._settle(t, fut, finished))

    @staticmethod
    def _settle(task: asyncio.Task, fut: Future, finished: Callable[[], None]) -> None:
        try:
            if task.cancelled():
                fut.cancel()
            elif fut.set_running_or_notify_cancel():
                error = task.exception()
                if error is None:
                    fut.set_result(task.result())
                else:
                    fut.set_exception(error)
        except InvalidStateError:  # cancelled by its reader meanwhile
            pass
        finally:
            finished()
