"""Executes the code blocks of README.md and docs/*.md fenced as ```python exec.

Each block runs in a fresh namespace where ``DATA`` is the path of a small synthetic
dataset (20 samples of 8x4x4 float16, 3 classes, extras) and the working directory is a
temporary one, so the documented snippets cannot rot.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_BLOCK = re.compile(r"```python exec\n(.*?)```", re.S)


def _blocks():
    for md in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        if md.exists():
            for i, code in enumerate(_BLOCK.findall(md.read_text())):
                yield pytest.param(code, id=f"{md.name}-{i}")


@pytest.mark.parametrize("code", list(_blocks()))
def test_doc_snippet_runs(code, make_dataset, tmp_path, monkeypatch):
    root, _ = make_dataset(n=20, shard_size=8, extras=True)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "<doc>", "exec"), {"DATA": str(root), "__name__": "__doc__"})
