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


def run_script(name: str, *args: str, timeout: float = 600) -> str:
    """Runs ``benchmarks/<name>`` with ``args`` from the repo root; returns its stdout."""
    proc = subprocess.run(
        [sys.executable, str(BENCH / name), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_bench_loader_quick_local(tmp_path):
    out = run_script(
        "bench_loader.py",
        "--quick",
        "--root",
        str(tmp_path / "data"),
        "--json_out",
        str(tmp_path / "r.json"),
    )
    for line in ("loffdata / raw read", "loffdata / webdataset", "loffdata+loffta / loffta alone"):
        assert line in out
    assert (tmp_path / "r.json").read_text().startswith("{")


def test_bench_loader_quick_cold_and_memory(tmp_path):
    root = str(tmp_path / "data")
    assert "page cache evicted" in run_script(
        "bench_loader.py", "--quick", "--cold", "--augment", "", "--root", root
    )
    out = run_script("bench_loader.py", "--quick", "--memory", "--root", root)
    assert "main VmRSS growth after epoch 0" in out and "bound (pool of" in out


def test_bench_loader_quick_http(tmp_path):
    out = run_script(
        "bench_loader.py",
        "--quick",
        "--source",
        "http",
        "--augment",
        "",
        "--root",
        str(tmp_path / "d"),
    )
    assert "loffdata / raw read http" in out and "loffdata / webdataset" in out


@pytest.mark.slow  # moto start-up and upload: ~12 s here, more under load
def test_bench_loader_quick_s3(tmp_path):
    out = run_script(
        "bench_loader.py",
        "--quick",
        "--source",
        "s3",
        "--augment",
        "",
        "--root",
        str(tmp_path / "d"),
    )
    assert "loffdata / raw read s3" in out


def test_plot_loader_quick(tmp_path):
    png = tmp_path / "plot.png"
    out = run_script(
        "plot_loader.py", "--quick", "--root", str(tmp_path / "data"), "--out", str(png)
    )
    assert "samples/s" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_loader_quick_cloud_simulator(tmp_path):
    png = tmp_path / "remote.png"
    out = run_script(
        "bench_loader.py",
        "--quick",
        "--source",
        "http",
        "--augment",
        "",
        "--latency_ms",
        "5",
        "--conn_mbps",
        "200",
        "--depths",
        "1,4",
        "--root",
        str(tmp_path / "d"),
        "--plot_out",
        str(png),
        timeout=600,
    )
    for line in (
        "loffdata / one connection",
        "cache epoch 2 / local",
        "16 range GETs, no decoding",
    ):
        assert line in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_clients_quick(tmp_path):
    out = run_script(
        "bench_clients.py",
        "--n",
        "64",
        "--shape",
        "32,8,8",
        "--shard_samples",
        "16",
        "--depths",
        "2",
        "--clients",
        "fsspec-async,fsspec-threads",
        "--block",
        "65536",
        "--root",
        str(tmp_path / "d"),
    )
    assert "fsspec-async" in out and "fsspec-threads" in out and "failed" not in out


@pytest.mark.parametrize(
    "name", sorted(p.name for p in BENCH.glob("*.py") if "fire.Fire" in p.read_text())
)
def test_every_benchmark_script_answers_help(name):
    proc = subprocess.run(
        [sys.executable, str(BENCH / name), "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={"PAGER": "cat", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "FLAGS" in proc.stdout or "FLAGS" in proc.stderr  # fire lists the script's own options


def test_bench_scale_quick(tmp_path):
    out = run_script("bench_scale.py", "--quick", "--tmp", str(tmp_path), timeout=600)
    assert "| 4,000 |" in out and "100 M (projected)" in out and "index sidecars" in out
    assert not list(tmp_path.iterdir())  # the caches it built are gone
