"""tools/check_sizes.py: modules over 400 lines and functions over 40 are listed, exit 1."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_TOOL = Path(__file__).resolve().parents[1] / "tools" / "check_sizes.py"
_spec = importlib.util.spec_from_file_location("check_sizes", _TOOL)
check_sizes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_sizes)


def _function(name: str, body_lines: int, indent: str = "") -> str:
    body = "".join(f"{indent}    x{i} = {i}\n" for i in range(body_lines))
    return f"{indent}def {name}():\n{body}"


def test_a_function_of_41_lines_is_listed_and_one_of_40_is_not(tmp_path, capsys):
    (tmp_path / "ok.py").write_text(_function("fits", 39))
    assert check_sizes.main([str(tmp_path)]) == 0
    (tmp_path / "big.py").write_text("class C:\n" + _function("method", 40, "    "))
    assert check_sizes.main([str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "big.py:2: C.method has 41 lines (> 40)" in out
    assert "fits" not in out


def test_a_module_over_400_lines_is_listed(tmp_path):
    path = tmp_path / "long.py"
    path.write_text("x = 1\n" * 401)
    assert check_sizes.oversized(path, 400, 40) == [f"{path}: module of 401 lines (> 400)"]
    path.write_text("x = 1\n" * 400)
    assert check_sizes.oversized(path, 400, 40) == []
