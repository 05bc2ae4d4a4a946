"""Shared fixtures and the mechanisms that keep the suite fast; reuse them in new tests.

- ``make_dataset``: tiny synthetic shard sets written into ``tmp_path``.
- ``http_server`` / ``s3_server`` (tests/servers.py, registered here for every test): ONE
  loopback HTTP origin and ONE moto S3 per session (per xdist worker). ``http_server`` is
  reset for each test (fresh root, no faults, latency or request log); on S3, give each test
  its own prefix (``s3_server.upload(root, "bucket", request.node.name)``).
- ``tests.inproc.run_cli("loffdata", "verify", root)``: a command line run in-process through
  its ``main(argv)`` (exit status, stdout, stderr, tracebacks as a subprocess would show
  them). Keep one real subprocess per command line; every other CLI test runs in-process.
- Hypothesis profiles: ``default`` (few, strong examples; ``tests.props.examples(n)`` scales a
  test's count) and ``ci-long`` (``pytest --hypothesis-profile=ci-long``: 10x deeper).
- Waiting: inject short deadlines through the config objects
  (``RetryConfig(backoff=0.01, timeout=0.5, deadline=3.0)``) and wait on events or state,
  never on ``time.sleep`` or wall-clock bounds; the suite runs under pytest-xdist.
- One torch thread per test process (and ``OMP_NUM_THREADS=1`` for the processes it starts):
  the suite's xdist workers already fill the cores; more threads only spin against each
  other (the demo's training: 5x the wall time, 2x the CPU with 2 threads on a loaded VM).
- Interpreter launches are counted and printed after the durations (tests/launches.py):
  prefer ``run_cli`` and fork-started workers to new interpreters. A test that starts a
  fresh one (a Python subprocess, ``spawn``, ``forkserver``) must be ``pytest.mark.slow``,
  or it fails: ``make test-fast`` runs no interpreter but the xdist workers.
- Expensive shared data: build it once in a ``scope="module"`` fixture and mark the module
  ``pytest.mark.xdist_group(name)`` so that ``--dist loadgroup`` keeps its tests on one worker
  (tests/test_demo.py's feature cache).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # before torch is imported, and for children
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import settings  # noqa: E402

from loffdata.format.manifest import Manifest  # noqa: E402
from loffdata.format.writer import WriterConfig, write_dataset  # noqa: E402
from tests import launches  # noqa: E402
from tests.launches import (  # noqa: E402, F401
    pytest_runtest_call,
    pytest_sessionfinish,
    pytest_terminal_summary,
    pytest_testnodedown,
)
from tests.servers import http_origin, http_server, moto_s3, s3_server  # noqa: E402, F401

torch.set_num_threads(1)
launches.install()

# ``default`` is derandomized: the same examples on every run, so CI never depends on the
# draw; ``ci-long`` explores (random, 10x the examples) and keeps a failure database.
settings.register_profile("default", max_examples=40, deadline=None, derandomize=True)
settings.register_profile("ci-long", max_examples=400, deadline=None)
settings.load_profile("default")


def synthetic_samples(
    n: int, shape=(8, 4, 4), *, classes: int = 3, seed: int = 0, extras: bool = False
):
    """Deterministic (key, features, label[, extras]) tuples; features encode their index."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        feats = rng.standard_normal(shape).astype(np.float32)
        feats[0, 0, 0] = i  # recoverable index, exact in float16 for i < 2048
        item = (f"s{i:07d}", feats, i % classes)
        yield (*item, {"pooled": feats.mean(axis=(1, 2))}) if extras else item


@pytest.fixture
def make_dataset(tmp_path: Path) -> Callable[..., tuple[Path, Manifest]]:
    """Factory: ``make_dataset(n, shard_size, shape=..., dtype=..., extras=...)``.

    Returns ``(dir, manifest)`` of a dataset written under ``tmp_path``."""

    def make(
        n: int = 20,
        shard_size: int = 8,
        *,
        shape=(8, 4, 4),
        dtype: str | None = "float16",
        extras: bool = False,
        name: str = "ds",
        classes: int = 3,
    ) -> tuple[Path, Manifest]:
        root = tmp_path / name
        manifest = write_dataset(
            str(root),
            synthetic_samples(n, shape, classes=classes, extras=extras),
            config=WriterConfig(max_samples=shard_size, dtype=dtype),
            classes=[f"c{i}" for i in range(classes)],
            source={"model": "synthetic"},
        )
        return root, manifest

    return make


def load_script(path, name: str):
    """Imports a standalone script (``recipes/*.py``) as a module named ``name``."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
