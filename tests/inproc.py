"""Run a command line in this interpreter, as a user's shell would run it in a new one.

Starting a Python interpreter costs 2.4-3.6 s here (torch's import); a CLI test pays it for
nothing when the code under test is the CLI's ``main(argv)``. :func:`run_cli` calls that
``main`` in-process and answers a :class:`subprocess.CompletedProcess` (exit status, stdout,
stderr), so a test written for a subprocess keeps its assertions:

- the exit status is the one ``sys.exit`` (or :func:`loffdata.cli.parse.run`) chose;
- an exception escaping ``main`` is printed as a ``Traceback`` on stderr with status 1, as
  the interpreter would, so "no traceback" assertions still mean something;
- the working directory is ``cwd`` while the command runs.

Keep ONE real subprocess per command line (``python -m loffdata``, ``tools/shard.py``,
``recipes/train.py``, each benchmark) to check the script's entry point itself.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["REPO", "run_cli", "run_main", "script_main"]

REPO = Path(__file__).resolve().parents[1]
_SCRIPTS: dict[str, Callable] = {}


def script_main(path: str | Path) -> Callable[[list[str]], None]:
    """The ``main(argv)`` of a standalone script (``tools/shard.py``), imported once."""
    key = str(Path(path).resolve())
    if key not in _SCRIPTS:
        from tests.conftest import load_script

        name = "_inproc_" + Path(key).stem + f"_{len(_SCRIPTS)}"
        _SCRIPTS[key] = load_script(key, name).main
    return _SCRIPTS[key]


def _exit_status(err: SystemExit, stderr: io.StringIO) -> int:
    if err.code is None or isinstance(err.code, int):
        return err.code or 0
    print(err.code, file=stderr)
    return 1


def run_main(
    main: Callable[[], object], *, args: Sequence[str] = (), cwd: str | Path | None = None
) -> subprocess.CompletedProcess:
    """Calls ``main()`` with stdout/stderr captured and ``cwd`` as the working directory."""
    out, err = io.StringIO(), io.StringIO()
    here = os.getcwd()
    status = 0
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as stop:
                status = _exit_status(stop, err)
            except Exception:  # what the interpreter would print before exiting 1
                err.write(traceback.format_exc())
                status = 1
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(list(args), status, out.getvalue(), err.getvalue())


def run_cli(
    command: str | Path, *argv: str, cwd: str | Path | None = None
) -> subprocess.CompletedProcess:
    """Runs a command line in-process: ``command`` is ``"loffdata"`` or a script's path.

    ``run_cli("loffdata", "verify", str(root))`` is ``loffdata verify ROOT``;
    ``run_cli(REPO / "tools/shard.py", "--help")`` is ``python tools/shard.py --help``.
    """
    from loffdata.cli import parse as cliutil

    argv = [str(a) for a in argv]
    if str(command) == "loffdata":
        from loffdata.cli.main import main as loffdata_main

        def call() -> None:
            loffdata_main(argv)  # wraps itself in cliutil.run
    else:
        script = script_main(command)

        def call() -> None:
            cliutil.run(lambda: script(argv))  # what the script's ``__main__`` block does

    return run_main(call, args=[sys.executable, str(command), *argv], cwd=cwd)
