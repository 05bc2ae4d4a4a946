"""Smoke runs of the benchmark scripts at tiny sizes: they run and print/write their outputs.

No timing is asserted: the figures of a shared CI machine mean nothing. One run per mode of a
script, at the smallest sizes that still go through every row (``TINY``, the scripts' own
flags); scripts without their own processes run in-process through ``main``, and the
``--help`` of every script is asked in one interpreter.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import load_script

# every benchmark smoke runs a script (most in an interpreter of their own): not the inner loop
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
#: bench_loader.py's sizes for a smoke run: 4 shards of 8 samples, one repeat
TINY = ("--n", "32", "--shape", "8,4,4", "--batch", "8", "--shard_samples", "8")
TINY += ("--repeats", "1", "--epochs", "2")


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
        *TINY,
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
        "bench_loader.py", *TINY, "--cold", "--augment", "", "--root", root
    )
    out = run_script("bench_loader.py", *TINY, "--memory", "--root", root)
    assert "main VmRSS growth after epoch 0" in out and "bound (pool of" in out


def test_plot_loader_quick(tmp_path):
    png = tmp_path / "plot.png"
    out = run_script(
        "plot_loader.py", "--quick", "--root", str(tmp_path / "data"), "--out", str(png)
    )
    assert "samples/s" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _bench_module(name: str):
    """A benchmark script imported as a module (its siblings importable, as when run)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # spawned row processes import them by name too
    return load_script(BENCH / f"{name}.py", name)


#: ``TINY`` as ``bench_loader.main``'s arguments, one worker: the remote smokes run in-process
TINY_KW = {"n": 32, "shape": "8,4,4", "batch": 8, "shard_samples": 8, "repeats": 1}
TINY_KW |= {"epochs": 2, "workers": 1, "augment": "", "in_process": True}
#: the rows every remote run prints, ``<source>`` standing for http or s3
REMOTE_ROWS = ["raw read", "raw read <source>", "webdataset", "loffdata", "loffdata, by shard"]
REMOTE_ROWS += ["loffdata, prefetch off", "loffdata, first epoch"]
_RATIO = re.compile(r"  (\S.*?)\s+(\S+)(?:\s+\(.*\))?")


def table(out: str) -> tuple[dict[str, list[float]], dict[str, float]]:
    """The rows (name: its numbers) and the ratios (name: value) bench_loader printed; fails
    on any line of a table or ratio block that is not one."""
    rows, ratios, block, header = {}, {}, None, ""
    for line in out.splitlines():
        if line.startswith(("row ", "requests/worker")) or line == "ratios:" or not line:
            block = {"row": 24, "req": 26, "rat": ratios}.get(line[:3])  # 24, 26: name widths
            header = line
        elif isinstance(block, int) and not line.startswith("fresh loader: built in "):
            name, numbers = line[:block].strip(), line[block:].split()
            assert name and numbers and line[block] == " ", line
            assert block == 26 or len(line) == len(header), (header, line)  # columns aligned
            rows[name] = [float(x.replace(",", "")) for x in numbers]
        elif block is ratios and line.startswith("  "):  # an unindented line ends them
            assert (match := _RATIO.fullmatch(line)), line
            ratios[match[1]] = float(match[2])
    return rows, ratios


def _remote_smoke(monkeypatch, capsys, source: str, **kwargs) -> tuple[dict, dict, dict]:
    """bench_loader over its own origin for ``source``, every row in this process; returns
    the figures, the printed rows and ratios (each remote row checked present)."""
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(key, "testing")  # the script sets them; undone after the test
    result = _bench_module("bench_loader").main(**TINY_KW, source=source, **kwargs)
    rows, ratios = table(capsys.readouterr().out)
    expected = [r.replace("<source>", source) for r in REMOTE_ROWS]
    assert list(result) == expected and list(rows)[: len(expected)] == expected
    for name in ("loffdata / raw read", f"loffdata / raw read {source}", "loffdata / webdataset"):
        assert name in ratios
    return result, rows, ratios


def test_bench_loader_quick_s3(tmp_path, monkeypatch, capsys):
    """Uploads the shards to moto's S3 (a process of the script's own) and reads them back."""
    result, rows, _ = _remote_smoke(monkeypatch, capsys, "s3", root=str(tmp_path / "d"))
    assert len(rows) == len(result) and all(len(v) == 2 for v in rows.values())


def test_bench_loader_quick_http_and_cloud_simulator(tmp_path, monkeypatch, capsys):
    """The HTTP rows and the simulator's study (prefetch sweep, cache, local rows) in one run."""
    png = tmp_path / "remote.png"
    sim = {"latency_ms": 1, "conn_mbps": 1000, "depths": "1", "plot_out": str(png)}
    _, rows, ratios = _remote_smoke(monkeypatch, capsys, "http", root=str(tmp_path / "d"), **sim)
    study = ["1 by shard", "1 by sample", "16 range GETs, no decoding", "cache_dir, epoch 1"]
    study += ["cache_dir, epoch 2", "local page cache", "local, later epochs"]
    assert list(rows)[len(REMOTE_ROWS) :] == study
    assert [len(rows[name]) for name in study] == [6, 6, 2, 2, 2, 2, 2]
    for name in ("loffdata / one connection", "first epoch / 16 range GETs"):
        assert name in ratios
    assert "cache epoch 2 / local" in ratios
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_clients_quick(tmp_path, capsys):
    _bench_module("bench_clients").main(
        n=64,
        shape="32,8,8",
        shard_samples=16,
        depths="2",
        clients="fsspec-async,fsspec-threads",
        block=65536,
        root=str(tmp_path / "d"),
    )
    out = capsys.readouterr().out
    assert "fsspec-async" in out and "fsspec-threads" in out and "failed" not in out


#: asks each script for ``--help`` as ``python SCRIPT --help`` would (its folder first on
#: ``sys.path``), all in one interpreter; one JSON line per script
_HELP_ALL = """
import contextlib, io, json, os, runpy, sys
for path in sys.argv[1:]:
    sys.path[0], sys.argv, text = os.path.dirname(path), [path, "--help"], io.StringIO()
    code = 0
    with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
        try:
            runpy.run_path(path, run_name="__main__")
        except SystemExit as exit_:
            code = exit_.code
    print(json.dumps({"script": path, "code": code, "text": text.getvalue()[-2000:]}))
"""


def test_every_benchmark_script_answers_help():
    scripts = sorted(str(p) for p in BENCH.glob("*.py") if "fire.Fire" in p.read_text())
    proc = subprocess.run(
        [sys.executable, "-c", _HELP_ALL, *scripts],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={"PAGER": "cat", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    answers = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [a["script"] for a in answers] == scripts and len(scripts) >= 6
    for a in answers:
        assert a["code"] in (0, None), a  # fire lists the script's own options
        assert "FLAGS" in a["text"], a


def test_bench_scale_quick(tmp_path, capsys):
    _bench_module("bench_scale").main(quick=True, tmp=str(tmp_path))
    out = capsys.readouterr().out
    assert "| 4,000 |" in out and "100 M (projected)" in out and "index sidecars" in out
    assert not list(tmp_path.iterdir())  # the caches it built are gone
