"""tests/launches.py counts what it says: Python subprocesses and processes by start method."""

import multiprocessing
import os
import subprocess
import sys

import pytest

from tests import launches


@pytest.mark.slow
def test_python_subprocesses_and_forks_are_counted_other_programs_not():
    before = dict(launches.COUNTS)
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    subprocess.run(["true"], check=True)  # not a Python program
    proc = multiprocessing.get_context("fork").Process(target=int)
    proc.start()
    proc.join()
    assert launches.COUNTS["python"] == before.get("python", 0) + 1
    assert launches.COUNTS["fork"] == before.get("fork", 0) + 1
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    assert launches._is_python([torchrun, "--nproc_per_node", "2", "x.py"], None)
    assert not launches._is_python(["git", "status"], None)


class _Item:
    """What the rule reads of a test item: its id and its ``slow`` marker."""

    def __init__(self, slow: bool):
        self.nodeid, self._slow = "tests/x.py::test_x", slow

    def get_closest_marker(self, name):
        return object() if name == "slow" and self._slow else None


def _call(item: _Item, launch: str | None):
    """Runs the rule's hook wrapper around a 'test' that launches ``launch`` (or nothing)."""
    gen = launches.pytest_runtest_call(item)
    next(gen)
    if launch:
        launches.COUNTS[launch] += 1  # as counted_execute / counted_start would
    try:
        gen.send("the test's result")
    except StopIteration as stop:
        return stop.value
    finally:  # the launch was pretend: the rule around this very test must not see it
        if launch:
            launches.COUNTS[launch] -= 1
    raise AssertionError("the hook wrapper yields once")


@pytest.mark.parametrize("launch", ["python", "spawn", "forkserver"])
def test_an_unmarked_test_that_starts_an_interpreter_fails_saying_what_to_do(launch):
    with pytest.raises(pytest.fail.Exception, match=r"test_x started 1 fresh .*mark it"):
        _call(_Item(slow=False), launch)
    assert _call(_Item(slow=True), launch) == "the test's result"  # marked slow: allowed


def test_forks_and_other_programs_are_not_fresh_interpreters():
    assert _call(_Item(slow=False), "fork") == "the test's result"
    assert _call(_Item(slow=False), None) == "the test's result"
