"""tools/spec_fields.py: AugmentSpec's field block, written from the op registry."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_TOOL = Path(__file__).resolve().parents[1] / "tools" / "spec_fields.py"
_spec = importlib.util.spec_from_file_location("spec_fields", _TOOL)
spec_fields = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(spec_fields)


def test_the_committed_block_is_the_one_the_registry_renders():
    assert spec_fields.current(spec_fields.SPEC.read_text()) == spec_fields.render()
    assert spec_fields.main([]) == 0


def test_a_stale_block_fails_the_check_and_write_renews_it(tmp_path, monkeypatch, capsys):
    text = spec_fields.SPEC.read_text()
    stale = tmp_path / "spec.py"
    stale.write_text(text.replace("    hflip: float = 0.0\n", "", 1))
    monkeypatch.setattr(spec_fields, "SPEC", stale)
    assert spec_fields.main([]) == 1
    assert "--write" in capsys.readouterr().out
    assert spec_fields.main(["--write"]) == 0
    assert stale.read_text() == text
