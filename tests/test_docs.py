"""Executes the code blocks of README.md and docs/*.md fenced as ```python exec.

Each block runs in a fresh namespace where ``DATA`` is the path of a small synthetic
dataset and the working directory is a temporary one, so the documented snippets cannot
rot. Every block runs on two caches of different shapes, sizes and class counts, so a
snippet that hard-codes the test data (``Linear(8*4*4, 3)``, ``len(ds) == 5``) fails: the
snippets must read shapes and classes from the manifest, as on a user's cache.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_BLOCK = re.compile(r"```python exec\n(.*?)```", re.S)
CACHES = {
    "8x4x4-3cls-20": {"n": 20, "shard_size": 8, "shape": (8, 4, 4), "classes": 3},
    "16x6x6-5cls-13": {"n": 13, "shard_size": 5, "shape": (16, 6, 6), "classes": 5},
}


def _blocks():
    for md in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        if md.exists():
            for i, code in enumerate(_BLOCK.findall(md.read_text())):
                yield pytest.param(code, id=f"{md.name}-{i}")


@pytest.mark.parametrize("cache", list(CACHES))
@pytest.mark.parametrize("code", list(_blocks()))
def test_doc_snippet_runs(code, cache, make_dataset, tmp_path, monkeypatch):
    root, _ = make_dataset(**CACHES[cache], extras=True)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "<doc>", "exec"), {"DATA": str(root), "__name__": "__doc__"})
