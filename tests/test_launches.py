"""tests/launches.py counts what it says: Python subprocesses and processes by start method."""

import multiprocessing
import os
import subprocess
import sys

from tests import launches


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
