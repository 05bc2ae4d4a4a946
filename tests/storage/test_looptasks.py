"""Tasks on fsspec's IO loop: started there without a hand-over, from elsewhere with one."""

import asyncio
import threading
from pathlib import Path

import numpy as np
from fsspec.asyn import get_loop

from loffdata.storage.looptasks import LoopTasks
from loffdata.storage.prefetch.by_sample import RangePrefetcher, RangeRead
from loffdata.storage.prefetch.by_shard import PrefetchConfig, ShardRead
from loffdata.storage.retry import RetryConfig
from loffdata.storage.shardfile import filesystem
from tests.servers import http_server, write_shards  # noqa: F401
from tests.storage.prefetch.test_by_sample import SHAPE, _offsets
from tests.storage.prefetch.test_by_shard import settled

HANG = 60  # seconds: bounds a broken implementation, never part of what is checked


def _on_loop(tasks: LoopTasks, fn):
    """``fn()`` called on the loop's own thread; returns its result."""
    done = asyncio.run_coroutine_threadsafe(_call(fn), tasks.loop)
    return done.result(HANG)


async def _call(fn):
    return fn()


def test_a_task_starts_on_the_loop_without_a_hand_over_and_from_elsewhere_with_one():
    tasks, finished = LoopTasks(get_loop()), []

    async def value(x):
        return x

    here = _on_loop(tasks, lambda: tasks.start(lambda: value(1), lambda: finished.append(1)))
    there = tasks.start(lambda: value(2), lambda: finished.append(2))
    assert here.result(HANG) == 1 and there.result(HANG) == 2
    assert (tasks.started_here, tasks.handed_over) == (1, 1) and not tasks.here()
    _on_loop(tasks, lambda: None)  # a loop turn: the finished callbacks ran after the results
    assert sorted(finished) == [1, 2]


def test_a_task_released_before_it_starts_never_runs():
    tasks, ran, finished = LoopTasks(get_loop()), [], threading.Event()
    gate = threading.Event()
    asyncio.run_coroutine_threadsafe(_call(lambda: gate.wait(HANG)), tasks.loop)  # loop busy

    async def body():
        ran.append(1)

    fut = tasks.start(body, finished.set)  # handed over while the loop is busy
    assert fut.cancel()
    gate.set()
    assert finished.wait(HANG) and not ran and fut.cancelled()


def test_cancelling_the_future_of_a_running_task_cancels_the_task():
    tasks, started, stopped, finished = LoopTasks(get_loop()), threading.Event(), [], []

    async def forever():
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            stopped.append(1)
            raise

    fut = tasks.start(forever, lambda: finished.append(1))
    assert started.wait(HANG) and fut.cancel()
    while not finished:  # a state, reached once the loop has run the cancellation
        _on_loop(tasks, lambda: None)
    assert stopped == [1] and finished == [1]


def test_completions_start_the_next_ranges_on_the_loop(http_server):  # noqa: F811
    """Each completed request hands its slot to the next planned range on the IO loop
    itself: of 20 ranges at 2 in flight, only the first 2 are handed over from the
    planning thread."""
    write_shards(Path(http_server.root), 20, 20, shape=SHAPE)
    fs, _ = filesystem(http_server.url, None, RetryConfig())
    shard = Path(http_server.root) / "shard-000000.tar"
    url = f"{http_server.url}/{shard.name}"
    read = ShardRead(url, fs, url, shard.stat().st_size, shard.stat().st_size)
    o = _offsets(http_server.root)[0]
    pf = RangePrefetcher(PrefetchConfig(sample_requests=2), RetryConfig())
    pf.plan_ranges(RangeRead(read, int(o[i]), int(o[i + 1])) for i in range(20))
    settled(pf)
    (tasks,) = pf._tasks.values()
    assert pf.requests == 20 and (tasks.handed_over, tasks.started_here) == (2, 18)
    f, data = pf.open(read), shard.read_bytes()
    for i in np.random.default_rng(0).permutation(20).tolist():
        f.seek(int(o[i]))
        assert f.read(int(o[i + 1] - o[i])) == data[o[i] : o[i + 1]]
    f.close()
    pf.close()
