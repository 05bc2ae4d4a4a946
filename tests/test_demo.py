"""recipes/demo.py: the library path in quick mode, cache reuse, and the CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "recipes" / "demo.py"
pytestmark = pytest.mark.filterwarnings("ignore::loffdata.extract.pipeline.RandomWeightsWarning")


@pytest.fixture(scope="module")
def demo():
    return load_script(SCRIPT, "loff_demo")


def test_quick_demo_library_path(demo, tmp_path, capsys):
    settings = demo.DemoSettings(
        out=str(tmp_path / "cache"),
        counts={"train": 40, "val": 20},
        overrides={**demo.QUICK["overrides"], "batch_size": 16, "progress": False},
    )
    report = demo.run_demo(settings)
    rows = {r["augment"]: r for r in report["rows"]}
    assert set(rows) == {"loffta", "none"}
    for r in rows.values():
        log = [json.loads(line) for line in (Path(r["out"]) / "log.jsonl").read_text().splitlines()]
        assert len(log) == 2 and (Path(r["out"]) / "checkpoint.pt").exists()
        # the row is the run's log: final and best accuracy, train-time-weighted rates
        assert r["val_acc"] == log[-1]["val_acc"] and r["best_val_acc"] == max(
            e["val_acc"] for e in log
        )
        assert all(
            (e["val_acc"] * 20) == pytest.approx(round(e["val_acc"] * 20)) for e in log
        )  # of 20 val samples
        seen = [e["samples_per_s"] * e["train_time"] for e in log]  # samples trained on per epoch
        assert seen == pytest.approx([40, 40], rel=1e-6), seen
        train_s = sum(e["train_time"] for e in log)
        assert r["samples_per_s"] == pytest.approx(80 / train_s, rel=1e-6)
        waits = sum(e["wait_fraction"] * e["train_time"] for e in log) / train_s
        assert r["wait_fraction"] == pytest.approx(waits) and all(
            0 <= e["wait_fraction"] <= 1 for e in log
        )
    table = demo.format_table(report["rows"])
    assert re.search(r"^loffta\s+\d+\.\d%", table, re.M) and re.search(
        r"^none\s+\d+\.\d%", table, re.M
    )
    capsys.readouterr()
    demo.build_cache(out=settings.out, counts=settings.counts)  # second call: no extraction
    assert "reusing the feature cache" in capsys.readouterr().out


@pytest.mark.slow
def test_quick_cli_prints_table(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path / "q")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"^augment\s+val acc", proc.stdout, re.M)
    assert re.search(r"^loffta\s+\d", proc.stdout, re.M) and re.search(
        r"^none\s+\d", proc.stdout, re.M
    )
    assert "outputs:" in proc.stdout and "total:" in proc.stdout


@pytest.mark.slow
def test_full_demo_beats_chance(demo, tmp_path):
    settings = demo.DemoSettings(
        out=str(tmp_path / "full"), counts=demo.FULL["counts"], overrides={"progress": False}
    )
    report = demo.run_demo(settings)
    for row in report["rows"]:
        assert row["val_acc"] > 0.5, row  # 10 classes: chance is 10%
