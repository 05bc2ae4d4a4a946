"""Smoke runs of the benchmark scripts (``--quick``): they run and print/write their outputs.

No timing is asserted: the figures of a shared CI machine mean nothing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"


def run_script(name: str, *args: str, timeout: float = 120) -> str:
    """Runs ``benchmarks/<name>`` with ``args`` from the repo root; returns its stdout."""
    proc = subprocess.run(
        [sys.executable, str(BENCH / name), *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_bench_loader_quick_local(tmp_path):
    out = run_script("bench_loader.py", "--quick", "--root", str(tmp_path / "data"),
                     "--json_out", str(tmp_path / "r.json"))
    for line in ("loffdata / raw read", "loffdata / webdataset", "loffdata+loffta / loffta alone"):
        assert line in out
    assert (tmp_path / "r.json").read_text().startswith("{")


def test_bench_loader_quick_cold_and_memory(tmp_path):
    root = str(tmp_path / "data")
    assert "page cache evicted" in run_script("bench_loader.py", "--quick", "--cold", "--augment", "", "--root", root)
    out = run_script("bench_loader.py", "--quick", "--memory", "--root", root)
    assert "main VmRSS growth after epoch 0" in out and "bound (pool of" in out


def test_bench_loader_quick_http(tmp_path):
    out = run_script("bench_loader.py", "--quick", "--source", "http", "--augment", "", "--root", str(tmp_path / "d"))
    assert "loffdata / raw read http" in out and "loffdata / webdataset" in out


@pytest.mark.slow  # moto start-up and upload: ~12 s here, more under load
def test_bench_loader_quick_s3(tmp_path):
    out = run_script("bench_loader.py", "--quick", "--source", "s3", "--augment", "", "--root", str(tmp_path / "d"))
    assert "loffdata / raw read s3" in out


def test_plot_loader_quick(tmp_path):
    png = tmp_path / "plot.png"
    out = run_script("plot_loader.py", "--quick", "--root", str(tmp_path / "data"), "--out", str(png))
    assert "samples/s" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
