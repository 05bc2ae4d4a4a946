"""``loffdata doctor``: versions, the backend ``auto`` picks, and wheel mismatches."""

import torch

from loffdata.cli.doctor import _notes, _problems, environment, pick_backend, report
from tests.inproc import run_cli


def test_report_names_versions_and_the_auto_backend():
    env = environment()
    assert env["torch"] == torch.__version__ and env["torch_cuda"] == torch.version.cuda
    text = report(env)
    assert f"torch        {torch.__version__}" in text and "backend='auto' picks" in text
    if not torch.cuda.is_available():
        assert env["backend_auto"] == "torch" and "no CUDA device" in text


def test_pick_backend_rule():
    """All four cases, each with its backend and the reason it names."""
    picks = {
        (cuda, dali): pick_backend(cuda, dali) for cuda in (False, True) for dali in (False, True)
    }
    assert {k: b for k, (b, _) in picks.items()} == {
        (False, False): "torch",
        (False, True): "torch",
        (True, False): "torch",
        (True, True): "dali",
    }
    assert "no CUDA device" in picks[False, True][1] and picks[False, False] == picks[False, True]
    assert (
        "DALI is not installed" in picks[True, False][1] and "both present" in picks[True, True][1]
    )


def test_dali_wheel_of_another_cuda_major_is_a_problem():
    env = {"torch_cuda": "13.0", "dali_wheels": {"nvidia-dali-cuda120": "2.4.0"}}
    assert any("install nvidia-dali-cuda130" in p for p in _problems(env))
    both = {
        "torch_cuda": "13.0",
        "dali_wheels": {"nvidia-dali-cuda120": "2.4", "nvidia-dali-cuda130": "2.4"},
    }
    assert any("several DALI wheels" in p for p in _problems(both))
    assert _problems({"torch_cuda": "12.8", "dali_wheels": {"nvidia-dali-cuda120": "2.4"}}) == []


def test_cli_doctor_prints_the_report():
    out = run_cli("loffdata", "doctor")  # in-process (tests/inproc.py)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    assert report(environment()) in out.stdout  # the report, whole


def test_a_cuda_mismatch_without_a_gpu_is_a_note_not_a_problem():
    env = {
        "torch_cuda": "13.0",
        "cuda_available": False,
        "dali_wheels": {"nvidia-dali-cuda120": "2.4.0"},
    }
    assert _problems(env) == []
    notes = _notes(env)
    assert (
        len(notes) == 1
        and "harmless here (no CUDA device" in notes[0]
        and "install nvidia-dali-cuda130" in notes[0]
    )
    text = report(
        {
            **env,
            "torch": "2.x",
            "device": None,
            "driver": None,
            "dali": "2.4.0",
            "backend_auto": "torch",
            "backend_reason": "no CUDA device",
            "transfer_auto": "none",
            "problems": [],
            "notes": notes,
        }
    )
    assert "PROBLEM" not in text and "NOTE " in text
    on_gpu = {**env, "cuda_available": True}
    assert (
        any("install nvidia-dali-cuda130" in p for p in _problems(on_gpu)) and _notes(on_gpu) == []
    )
