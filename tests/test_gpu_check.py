"""``make gpu-check`` without a GPU: its one-line answer, and the same script at smoke sizes on the
CPU.

No figure is asserted (a CPU smoke run measures nothing); the checks inside the sections
(DALI vs torch equivalence, int8, views, mixing, resume, transfer paths) must pass.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_one_line_and_exit_2_unless_allowed():
    proc = _run()
    assert proc.returncode == 2, proc.stderr[-2000:]
    [line] = proc.stdout.strip().splitlines()
    assert line.startswith("gpu-check: asked for CUDA, but torch") and line.endswith(
        "nothing checked; FAILED"
    )
    proc = _run("--allow-no-cuda")
    assert proc.returncode == 0 and proc.stdout.strip().endswith(
        "nothing checked (--allow-no-cuda)"
    )


def test_a_wheel_mismatch_refuses_to_pass():
    sys.path.insert(0, str(SCRIPT.parent))
    import gpu_check

    env = {
        "cuda_available": True,
        "torch": "2.11",
        "torch_cuda": "13.0",
        "problems": ["nvidia-dali-cuda120 is built for CUDA 12, torch for CUDA 13"],
    }
    code, line = gpu_check.refusal("cuda", False, env)
    assert code == 2 and "wheel mismatch" in line and "nvidia-dali-cuda120" in line
    assert gpu_check.refusal("cuda", False, {**env, "problems": []}) is None
    assert (
        gpu_check.refusal("cpu", False, env) is None
    )  # the CPU smoke run uses no DALI wheel on a GPU


def test_a_section_past_its_budget_is_stopped_and_reported(monkeypatch):
    sys.path.insert(0, str(SCRIPT.parent))
    import gpu_check

    def forever(ctx):
        while True:
            pass

    monkeypatch.setitem(gpu_check.sections.SECTIONS, "forever", forever)
    result = gpu_check._run_section("forever", None, 0.5)
    assert result["ok"] is False and "ran past its budget" in result["error"]


def _smoke(tmp_path: Path, sections: str) -> dict:
    proc = _run("--smoke", "--device", "cpu", "--out", str(tmp_path), "--only", sections)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu-check-smoke.json").read_text())
    assert set(report["sections"]) == set(sections.split(","))
    assert all(s.get("ok", True) for s in report["sections"].values())
    md = (tmp_path / "gpu-check-smoke.md").read_text()
    assert "SMOKE RUN" in md and "<!-- gpu-check:begin -->" in md and "Every section passed." in md
    return report


@pytest.mark.slow
def test_smoke_run_on_cpu_checks_and_measurements(tmp_path):
    pytest.importorskip("nvidia.dali")
    report = _smoke(tmp_path, "equivalence,loader,h2d,throughput,resize")
    assert report["sections"]["equivalence"]["cases"] >= 50
    assert report["env"]["torch"] == torch.__version__
    assert {r["augment"] for r in report["sections"]["throughput"]["rows"]} == {"None", "loffta"}


@pytest.mark.slow  # imports timm, builds models, runs compare_finetune --quick: ~1-2 min here
def test_smoke_run_on_cpu_training_extraction_finetune(tmp_path):
    report = _smoke(tmp_path, "training,extraction,finetune")
    training = report["sections"]["training"]
    epochs, later = training["epochs"], training["epochs"][1:] or training["epochs"]
    assert [e["epoch"] for e in epochs] == list(range(len(epochs))) and len(epochs) >= 2
    # every batch of every epoch trained on, a wait that is part of the epoch's time, and the
    # reported fraction the mean of the later (warm) epochs' own figures
    assert all(e["batches"] == e["expected_batches"] > 0 and e["finite_loss"] for e in epochs)
    assert all(0 < e["wait_s"] < e["seconds"] for e in epochs)
    assert training["data_wait_fraction"] == pytest.approx(
        statistics.mean(e["wait_s"] / e["seconds"] for e in later)
    )
    assert "speedup" in report["sections"]["finetune"]["runs"]["quick"]


@pytest.mark.slow
def test_standin_run_passes_and_writes_its_own_files(tmp_path):
    """``--device standin``: the loader on the strict CUDA stand-in (the runbook's dry run)."""
    proc = _run("--device", "standin", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu-check-standin.json").read_text())
    result = report["sections"]["standin"]
    assert result["ok"] and set(result["transfer"]) == {"pin-thread", "register"}
    assert all(v["syncs"] == 0 and v["same_as_cpu"] for v in result["transfer"].values())
    assert not (tmp_path / "benchmarks-gpu.md").exists()  # GPU figures are never overwritten by it
