"""Extraction errors that say what to do: skip reasons as text, --pretrained offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from loffdata.extract.images import BadImageError, decode_image

ROOT = Path(__file__).resolve().parents[2]


def test_skip_reason_is_text_not_a_buffer_repr():
    with pytest.raises(BadImageError) as err:
        decode_image(b"not an image at all", "imgs/cat/1.png")
    assert "BytesIO" not in err.value.reason and "0x" not in err.value.reason
    assert "not an image PIL can read" in err.value.reason and "imgs/cat/1.png" in str(err.value)


@pytest.mark.slow
def test_pretrained_offline_fails_fast_with_what_to_do(tmp_path):
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "shard.py"),
            "--pretrained",
            "--model",
            "vit_tiny_patch16_224",
            "--shapes_counts",
            "{train: 2}",
            "--workers",
            "0",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "--checkpoint PATH" in proc.stderr and "HF_HOME" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_pretrained_offline_from_python_fails_before_creating_the_model(monkeypatch):
    from loffdata.errors import LoffError
    from loffdata.extract.extractconfig import ExtractConfig
    from loffdata.extract.model import build_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LoffError, match=r"--checkpoint PATH .* HF_HOME"):
        build_model(ExtractConfig(model="vit_tiny_patch16_224", pretrained=True))
