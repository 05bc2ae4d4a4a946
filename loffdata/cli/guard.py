"""The guard every loffdata CLI runs behind: no traceback, ever; one line and an exit status.

:func:`run` turns a :class:`~loffdata.cli.values.CliError` into exit 2, any other
:class:`~loffdata.errors.LoffError` into exit 1, and anything else into one "please report"
line with the path of a redacted crash log (exit 3). :mod:`loffdata.cli.parse` re-exports it.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from typing import Any

from loffdata.cli.values import CliError
from loffdata.errors import LoffError
from loffdata.redact import redact_text

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_PROBLEM",
    "EXIT_USAGE",
    "run",
]

#: Exit statuses of every loffdata CLI (docs/troubleshooting.md).
EXIT_PROBLEM, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 1, 2, 3, 130, 141


def run(main: Callable[[], Any]) -> None:
    """Runs ``main()`` behind the guard every loffdata CLI shares: no traceback, ever.

    A :class:`CliError` is one ``error:`` line and exit 2, any other :class:`LoffError` one
    line and exit 1; any other exception is one line saying "please report" with the path
    of a log file holding the (redacted) traceback, exit 3; Ctrl-C exits 130 and a closed
    pipe (``loffdata inspect DIR | head -1``) ends quietly with 141. Every line is redacted.
    """
    try:
        main()
        sys.stdout.flush()
    except SystemExit:
        raise
    except BrokenPipeError:
        _quiet_stdout()
        sys.exit(EXIT_BROKEN_PIPE)
    except KeyboardInterrupt:
        _say("error: interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except CliError as err:
        _say(f"error: {err}")
        sys.exit(EXIT_USAGE)
    except LoffError as err:
        _say(f"error: {err}")
        sys.exit(EXIT_PROBLEM)
    except Exception as err:  # noqa: BLE001 - the guard: anything else is a bug to report
        log = _crash_log(err)
        first = redact_text(str(err).strip().splitlines()[0][:300] if str(err).strip() else "")
        _say(
            f"error: internal error ({type(err).__name__}{': ' + first if first else ''}); "
            f"please report it with the log {log}"
        )
        sys.exit(EXIT_INTERNAL)


def _say(line: str) -> None:
    with contextlib.suppress(OSError):
        print(redact_text(line), file=sys.stderr, flush=True)


def _quiet_stdout() -> None:
    """Points stdout at /dev/null, so the interpreter's last flush meets no closed pipe."""
    import os

    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _crash_log(err: BaseException) -> str:
    """Writes the redacted traceback of ``err`` to a private temporary file; its path."""
    import os
    import tempfile
    import traceback

    text = redact_text("".join(traceback.format_exception(err)))
    try:
        fd, path = tempfile.mkstemp(prefix="loffdata-crash-", suffix=".log")  # mode 0600
        with os.fdopen(fd, "w") as f:
            f.write(f"argv: {redact_text(' '.join(sys.argv))}\n{text}")
        return path
    except OSError:
        return "(none: the temporary directory is not writable)"
