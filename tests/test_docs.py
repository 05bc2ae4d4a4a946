"""Every code block of README.md and docs/*.md runs as written.

``python exec`` blocks run in a fresh namespace where ``DATA`` is the path of a small
synthetic dataset and the working directory is a temporary one, so the documented snippets
cannot rot. Every such block runs on two caches of different shapes, sizes and class
counts, so a snippet that hard-codes the test data (``Linear(8*4*4, 3)``, ``len(ds) == 5``)
fails: the snippets must read shapes and classes from the manifest, as on a user's cache.

The **docs-commands test** runs every other ``bash`` and ``python`` block: shell lines
through the CLIs' ``main(argv)`` in-process (``loffdata``, ``loffdata-shard`` /
``python tools/shard.py``, ``loffdata-train`` / ``python recipes/train.py``), in a working
directory holding small caches at the paths the docs use (``feats/mine/{train,val}``,
``out/demo/{train,val}``) and the repository's ``recipes/`` and ``tools/``. A block is left
out only when the line before its fence marks it, with the reason::

    <!-- docs-test: needs gpu -->        (CUDA, several GPUs, torchrun)
    <!-- docs-test: needs network -->    (model hubs, remote buckets, packages to install)
    <!-- docs-test: make target -->      (``make demo``, ``make test``: the suite and CI run them)
    <!-- docs-test: slow -->             (runs, but in the slow tier: a full extraction)

and ``<!-- docs-test: continues -->`` runs a block after the one before it, in the same
working directory (a script told in steps).
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_BLOCK = re.compile(r"```python exec\n(.*?)```", re.S)
CACHES = {
    "8x4x4-3cls-20": {"n": 20, "shard_size": 8, "shape": (8, 4, 4), "classes": 3},
    "16x6x6-5cls-13": {"n": 13, "shard_size": 5, "shape": (16, 6, 6), "classes": 5},
}
_FENCE = re.compile(r"^(\s*)```(.*?)\s*$")
_MARK = re.compile(
    r"<!--\s*docs-test:\s*(needs gpu|needs network|make target|slow|continues)\s*-->"
)
_SHELL = ("bash", "sh", "shell", "console")


def _docs() -> list[Path]:
    return [p for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))] if p.exists()]


def _blocks():
    for md in _docs():
        for i, code in enumerate(_BLOCK.findall(md.read_text())):
            yield pytest.param(code, id=f"{md.name}-{i}")


@pytest.mark.parametrize("cache", list(CACHES))
@pytest.mark.parametrize("code", list(_blocks()))
def test_doc_snippet_runs(code, cache, make_dataset, tmp_path, monkeypatch):
    root, _ = make_dataset(**CACHES[cache], extras=True)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "<doc>", "exec"), {"DATA": str(root), "__name__": "__doc__"})


# --- the docs-commands test ---------------------------------------------------------------------


def doc_blocks(text: str) -> list[tuple[int, str, str, str | None]]:
    """``(line, language, code, marker)`` of every fenced block (indented ones too)."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, lang, j = len(m.group(1)), m.group(2), i + 1
        while j < len(lines) and not lines[j].strip().startswith("```"):
            j += 1
        mark = _MARK.search(lines[i - 1]) if i else None
        code = "\n".join(line[indent:] for line in lines[i + 1 : j])
        out.append((i + 1, lang, code, mark.group(1) if mark else None))
        i = j + 1
    return out


def _command_blocks():
    for md in _docs():
        chains: list[tuple[int, list[tuple[str, str]], str | None]] = []
        for line, lang, code, mark in doc_blocks(md.read_text()):
            if lang not in _SHELL and lang != "python":
                continue
            if mark == "continues" and chains:
                chains[-1][1].append((lang, code))
            else:
                chains.append((line, [(lang, code)], mark))
        for line, steps, mark in chains:
            marks = [pytest.mark.skip(reason=f"marked: {mark}")] if mark and mark != "slow" else []
            marks += [pytest.mark.slow] if mark == "slow" else []
            yield pytest.param(steps, id=f"{md.name}:{line}", marks=marks)


def shell_lines(code: str) -> list[list[str]]:
    """The commands of a shell block: continuations joined, comments dropped, split like sh."""
    joined = re.sub(r"\\\n\s*", " ", code)
    return [words for text in joined.splitlines() if (words := shlex.split(text, comments=True))]


def _clis() -> dict[tuple[str, ...], Callable[[list[str]], None]]:
    from loffdata.cli.main import main as loffdata_main
    from loffdata.extract.command import main as shard_main
    from loffdata.train.command import main as train_main

    return {
        ("loffdata",): loffdata_main,
        ("python", "-m", "loffdata"): loffdata_main,
        ("loffdata-shard",): shard_main,
        ("python", "tools/shard.py"): shard_main,
        ("loffdata-train",): train_main,
        ("python", "recipes/train.py"): train_main,
    }


def run_shell(code: str, env: dict[str, str]) -> None:
    """Runs each line in-process; ``A=b`` lines set variables that later lines expand."""
    from loffdata.cli import parse as cliutil

    clis = _clis()
    for words in shell_lines(code):
        words = [os.path.expandvars(w) for w in words]
        if len(words) == 1 and re.fullmatch(r"[A-Za-z_]\w*=.*", words[0]):
            os.environ.__setitem__(*words[0].split("=", 1))
            env[words[0].split("=", 1)[0]] = words[0].split("=", 1)[1]
            continue
        head = next((k for k in clis if tuple(words[: len(k)]) == k), None)
        assert head is not None, (
            f"no in-process runner for {' '.join(words)!r}: mark the block (see this module)"
        )
        try:
            cliutil.run(functools.partial(clis[head], words[len(head) :]))
        except SystemExit as exit_:
            assert not exit_.code, f"{' '.join(words)!r} exited with {exit_.code}"


@pytest.fixture
def doc_workdir(tmp_path, monkeypatch):
    """A working directory with small caches where the docs' commands look for them."""
    from loffdata.format.writer import WriterConfig, write_dataset
    from tests.conftest import synthetic_samples

    work = tmp_path / "work"
    demo = {
        "model": "vit_tiny_patch16_224",
        "img_size": 112,
        "pool": 1,
    }  # what recipes/configs/demo.yaml checks
    for base, shape, classes, source in (
        ("feats/mine", (8, 4, 4), 3, {"model": "synthetic"}),
        ("out/demo", (192, 7, 7), 10, demo),
    ):
        for split, n in (("train", 24), ("val", 12)):
            write_dataset(
                str(work / base / split),
                synthetic_samples(n, shape, classes=classes, seed=n),
                config=WriterConfig(max_samples=8),
                classes=[f"c{i}" for i in range(classes)],
                source=source,
            )
    for name in ("recipes", "tools"):
        (work / name).symlink_to(ROOT / name)
    monkeypatch.chdir(work)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setattr(sys, "argv", ["docs"])
    return work


@pytest.mark.filterwarnings("ignore::loffdata.train.run.FewStepsWarning", "ignore::UserWarning")
@pytest.mark.parametrize("steps", list(_command_blocks()))
def test_documented_commands_run_as_written(steps, doc_workdir):
    for lang, code in steps:
        if lang == "python":
            exec(
                compile(code, "<doc>", "exec"),
                {"DATA": str(doc_workdir / "feats/mine/train"), "__name__": "__doc__"},
            )
        else:
            run_shell(code, {})


def test_a_block_without_a_runner_fails_and_a_marker_skips_it():
    text = (
        "<!-- docs-test: needs network -->\n```bash\npip install x\n```\n```bash\nmake demo\n```\n"
    )
    (_, _, _, mark), (_, _, code, none) = doc_blocks(text)
    assert mark == "needs network" and none is None
    with pytest.raises(AssertionError, match="no in-process runner for 'make demo'"):
        run_shell(code, {})
    assert shell_lines("loffdata convert a b \\\n   --crop 0,0,2,2  # a comment\nX=1") == [
        ["loffdata", "convert", "a", "b", "--crop", "0,0,2,2"],
        ["X=1"],
    ]
