"""recipes/demo.py: the library path in quick mode, cache reuse, the learning claim, the CLI.

One feature cache (``CACHE``: the extraction is most of a demo's cost) is built per module
and shared by the library tests, which the ``xdist_group`` keeps on one xdist worker; each
test trains into its own directory (``_workdir``: the cache's splits linked into it).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "recipes" / "demo.py"
pytestmark = [
    pytest.mark.filterwarnings("ignore::loffdata.extract.pipeline.RandomWeightsWarning"),
    pytest.mark.xdist_group("demo"),
]
#: the shared cache: enough samples for the learning claim, a fifth of the full demo's
CACHE = {"train": 200, "val": 100}


@pytest.fixture(scope="module")
def demo():
    return load_script(SCRIPT, "loff_demo")


@pytest.fixture(scope="module")
def cache(demo, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo-cache")
    demo.build_cache(out=str(out), counts=CACHE, progress=False)
    return out


def _workdir(cache: Path, tmp_path: Path) -> str:
    """A demo directory of this test's own, holding the shared cache's splits."""
    for split in CACHE:
        (tmp_path / split).symlink_to(cache / split, target_is_directory=True)
    return str(tmp_path)


def test_quick_demo_library_path(demo, cache, tmp_path, capsys):
    settings = demo.DemoSettings(
        out=_workdir(cache, tmp_path),
        counts=CACHE,
        overrides={**demo.QUICK["overrides"], "batch_size": 16, "progress": False},
    )
    n_train, n_val = CACHE["train"], CACHE["val"]
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
            (e["val_acc"] * n_val) == pytest.approx(round(e["val_acc"] * n_val)) for e in log
        )  # of n_val val samples
        seen = [e["samples_per_s"] * e["train_time"] for e in log]  # samples trained on per epoch
        assert seen == pytest.approx([n_train, n_train], rel=1e-6), seen
        train_s = sum(e["train_time"] for e in log)
        assert r["samples_per_s"] == pytest.approx(2 * n_train / train_s, rel=1e-6)
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
        [sys.executable, str(SCRIPT), "--quick", "--epochs", "1", "--out", str(tmp_path / "q")],
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
def test_demo_beats_chance(demo, cache, tmp_path):
    """The full demo's claim (``recipes/configs/demo.yaml``: depth 2, 4 epochs) on the shared
    fifth of its cache, at batch 32 for as many steps: seeded, 84% and 72% when written."""
    settings = demo.DemoSettings(
        out=_workdir(cache, tmp_path), counts=CACHE, overrides={"progress": False, "batch_size": 32}
    )
    report = demo.run_demo(settings)
    assert [row["augment"] for row in report["rows"]] == ["loffta", "none"]
    for row in report["rows"]:
        assert row["val_acc"] > 0.5, row  # 10 classes: chance is 10%
