"""Exceptions raised by loffdata.

Every error that concerns data names where the data came from: the shard URL and,
when known, the sample key. Catch :class:`LoffError` to handle all of them.
"""

from __future__ import annotations

import signal

from loffdata.redact import redact_text

__all__ = [
    "LoffError",
    "CodecError",
    "FormatError",
    "ManifestError",
    "ShardReadError",
    "SampleError",
    "WorkerDiedError",
    "LocationError",
]


class LoffError(Exception):
    """Base class of every error raised by loffdata.

    Its text never holds a secret: URL userinfo and secret-like values are replaced by
    ``***`` when the error is made (:mod:`loffdata.redact`), whichever subclass or call site
    made it.
    """

    def __init__(self, *args: object):
        super().__init__(*(redact_text(a) if isinstance(a, str) else a for a in args))

    def __str__(self) -> str:
        return redact_text(super().__str__())


class CodecError(LoffError, ValueError):
    """A tensor payload could not be encoded or decoded."""


class FormatError(LoffError, ValueError):
    """A tar shard or sample does not follow the loffdata shard format."""


class ManifestError(LoffError, ValueError):
    """A manifest is missing, malformed or inconsistent."""


class ShardReadError(LoffError, OSError):
    """A shard could not be read (missing, unreachable, truncated)."""


class SampleError(LoffError, ValueError):
    """A sample inside a shard is malformed.

    Attributes:
        shard: URL or path of the shard.
        key: the sample key inside the shard, or ``None`` when unknown.
    """

    def __init__(self, message: str, *, shard: str | None = None, key: str | None = None):
        self.shard = redact_text(shard) if isinstance(shard, str) else shard
        self.key = key
        super().__init__(f"{message} (shard={shard!r}, key={key!r})")

    def __reduce__(self):  # keep shard/key when re-raised across processes
        return (_rebuild_sample_error, (self.args[0], self.shard, self.key))


def _rebuild_sample_error(text: str, shard: str | None, key: str | None) -> SampleError:
    err = SampleError.__new__(SampleError)
    Exception.__init__(err, text)
    err.shard, err.key = shard, key
    return err


def describe_exit(code: int) -> str:
    """``"killed by SIGKILL"`` / ``"exit code 3"``."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class WorkerDiedError(LoffError, RuntimeError):
    """A DataLoader worker process of a loader died (killed by a signal, out of memory, a
    crash in native code). Raised by the loader's next batch request; the other workers
    are stopped.

    Attributes:
        pids: process ids of the dead workers.
        exitcodes: their exit codes (negative: the signal number).
    """

    def __init__(self, pids: list[int], exitcodes: list[int]):
        self.pids, self.exitcodes = list(pids), list(exitcodes)
        what = ", ".join(f"pid {p} ({describe_exit(c)})" for p, c in zip(self.pids, self.exitcodes))
        super().__init__(
            f"DataLoader worker process died: {what}. The loader stopped its other workers; "
            "a worker killed by SIGKILL is often the kernel's out-of-memory killer"
        )

    def __reduce__(self):
        return (WorkerDiedError, (self.pids, self.exitcodes))


class CliError(LoffError, ValueError):
    """A flag, value or config-file key is wrong; the message says which and what to do
    (the CLIs print it as one ``error:`` line and exit 2)."""


class LocationError(LoffError, ValueError):
    """An output location is unsafe: inside its own input, or a name that leaves its directory."""
