"""No traceback from any CLI, ever: the one guard of loffdata/cli/parse.py's ``run``.

A LoffError or CliError is one ``error:`` line; anything else is one line saying "please
report" with the path of a log holding the redacted traceback; a closed pipe ends quietly;
the exit statuses are those docs/troubleshooting.md lists. Every CLI of the project
(``loffdata``, tools/shard.py, recipes/train.py, recipes/demo.py) goes through it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from loffdata.cli import guard, parse
from loffdata.cli.values import CliError
from loffdata.errors import ManifestError

ROOT = Path(__file__).resolve().parents[1]
SECRET = "hunter2-guard"


def _run(fn, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_:
        parse.run(fn)
    return exit_.value.code, capsys.readouterr().err


def _raise(err: BaseException):
    def fn():
        raise err

    return fn


def test_loff_and_cli_errors_are_one_line(capsys):
    code, err = _run(_raise(ManifestError(f"no manifest at 'http://u:{SECRET}@h/x'")), capsys)
    assert code == guard.EXIT_PROBLEM and err == "error: no manifest at 'http://***@h/x'\n"
    code, err = _run(_raise(CliError("--epochs: expected int")), capsys)
    assert code == guard.EXIT_USAGE and err == "error: --epochs: expected int\n"


def test_any_other_exception_is_one_line_with_a_redacted_log(capsys):
    code, err = _run(_raise(KeyError(f"http://user:{SECRET}@host/a.tar")), capsys)
    assert code == guard.EXIT_INTERNAL and len(err.strip().splitlines()) == 1
    assert "please report" in err and SECRET not in err and "Traceback" not in err
    log = Path(re.search(r"the log (\S+)", err)[1])
    text = log.read_text()
    assert "Traceback" in text and "KeyError" in text and SECRET not in text and "***@host" in text
    assert log.stat().st_mode & 0o077 == 0  # readable by its owner only
    log.unlink()


def test_interrupt_is_one_line(capsys):
    code, err = _run(_raise(KeyboardInterrupt()), capsys)
    assert code == guard.EXIT_INTERRUPTED and err == "error: interrupted\n"


@pytest.mark.slow
def test_a_closed_pipe_ends_quietly(tmp_path):
    code = (
        "from loffdata.cli.parse import run\n"
        "run(lambda: [print('x' * 1000) for _ in range(100000)])\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()  # the reader is gone before the first write: every write meets EPIPE
    err = proc.stderr.read().decode()
    assert proc.wait() == guard.EXIT_BROKEN_PIPE and err == "", err


@pytest.mark.parametrize(
    "script, argv",
    [
        ("-m loffdata", ["inspect", "{missing}"]),
        ("-m loffdata", ["verify", "{missing}", "--config", "/dev/zero"]),
        ("tools/shard.py", ["--prefix", "../x", "--out", "{missing}"]),
        ("recipes/train.py", ["--config", "/dev/zero"]),
        ("recipes/demo.py", ["--config", "{missing}/none.yaml"]),
    ],
)
@pytest.mark.slow
def test_every_cli_answers_in_one_line(tmp_path, script, argv):
    args = [a.format(missing=tmp_path / "missing") for a in argv]
    cmd = (
        [sys.executable, *script.split(), *args]
        if script.startswith("-m")
        else [sys.executable, str(ROOT / script), *args]
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode in (guard.EXIT_PROBLEM, guard.EXIT_USAGE), proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error:") and "Traceback" not in proc.stderr, proc.stderr
