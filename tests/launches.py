"""Counts the interpreter launches of a test session and prints them after the durations.

Every Python process a test starts pays for its imports (torch alone: seconds), so growth
must be visible: ``make test`` ends with a line such as::

    interpreter launches: 25 python subprocesses, 12 spawned, 140 forked (...)

Counted in each pytest process (the xdist workers report theirs to the controller):
``subprocess`` starts of a Python program (the interpreter itself or a script of its
``bin/``: ``torchrun``, ``loffdata``) and ``multiprocessing`` starts by method (``spawn`` and
``forkserver`` start a fresh interpreter; ``fork`` copies the test's, imports included); the
xdist workers are among the subprocesses (``-n 4``: 4). A
child's own children (torchrun's ranks, a benchmark script's processes) are not counted.
"""

from __future__ import annotations

import collections
import multiprocessing
import multiprocessing.process
import os
import shlex
import shutil
import subprocess
import sys

import pytest

__all__ = [
    "COUNTS",
    "install",
    "pytest_runtest_call",
    "pytest_sessionfinish",
    "pytest_terminal_summary",
    "pytest_testnodedown",
]

#: this process's counts: ``python`` (subprocesses), ``spawn``, ``forkserver``, ``fork``
COUNTS: collections.Counter[str] = collections.Counter()
_BINS = {os.path.dirname(p) for p in (sys.executable, os.path.realpath(sys.executable))}
_KEY = "loff_launches"


def _is_python(args, executable) -> bool:
    """Whether a ``Popen`` runs the interpreter or a script of its ``bin/`` folder."""
    if executable is None:
        words = shlex.split(args) if isinstance(args, str) else list(args)
        executable = words[0] if words else ""
    path = os.fspath(executable)
    found = path if os.sep in path else shutil.which(path)  # a name: as the shell finds it
    where = {os.path.dirname(p) for p in (found, os.path.realpath(found))} if found else set()
    return os.path.basename(path).startswith("python") or bool(where & _BINS)


def install() -> None:
    """Wraps ``Popen._execute_child`` and ``BaseProcess.start`` (once per process)."""
    if getattr(subprocess.Popen, "_loff_counted", False):
        return
    execute, start = subprocess.Popen._execute_child, multiprocessing.process.BaseProcess.start

    def counted_execute(self, args, executable, *rest, **kwargs):
        if _is_python(args, executable):
            COUNTS["python"] += 1
        return execute(self, args, executable, *rest, **kwargs)

    def counted_start(self):
        COUNTS[getattr(self, "_start_method", None) or multiprocessing.get_start_method()] += 1
        return start(self)

    subprocess.Popen._execute_child = counted_execute
    subprocess.Popen._loff_counted = True
    multiprocessing.process.BaseProcess.start = counted_start


#: the launches that start a fresh interpreter (each pays for importing torch again)
FRESH = ("python", "spawn", "forkserver")


def fresh_launches() -> int:
    """This process's launches of a fresh interpreter so far."""
    return sum(COUNTS[kind] for kind in FRESH)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """A test that starts a fresh interpreter must be marked ``slow``.

    ``make test-fast`` (``-m "not slow"``) is the inner loop: every interpreter costs seconds
    of imports, so one launch per test would be the whole budget. Counted in the test's call
    (a module fixture's launch is seen by its module's first test's durations instead).
    """
    before = fresh_launches()
    result = yield
    launched = fresh_launches() - before
    if launched and item.get_closest_marker("slow") is None:
        pytest.fail(
            f"{item.nodeid} started {launched} fresh interpreter(s) (python subprocess, "
            "spawn or forkserver) but is not marked slow: mark it "
            "@pytest.mark.slow, or run it in-process (tests.inproc.run_cli, fork)",
            pytrace=False,
        )
    return result


def pytest_sessionfinish(session) -> None:
    """An xdist worker hands its counts to the controller."""
    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        output[_KEY] = dict(COUNTS)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """The controller adds up what each xdist worker counted."""
    COUNTS.update(getattr(node, "workeroutput", {}).get(_KEY, {}))


def pytest_terminal_summary(terminalreporter) -> None:
    """One line after the slowest durations."""
    if getattr(terminalreporter.config, "workerinput", None) is not None:
        return
    c = COUNTS
    terminalreporter.write_line(
        f"interpreter launches: {c['python']} python subprocesses, {c['spawn']} spawned, "
        f"{c['forkserver']} forkserver, {c['fork']} forked (tests/launches.py)"
    )
