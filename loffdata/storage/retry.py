"""Retries of remote requests: which errors are worth a retry, backoff, and the deadline.

:class:`RetryConfig` holds the timeouts and the backoff; :func:`with_retries` (and
:func:`with_retries_async` for coroutines) call a request until it succeeds, and turn a
missing, changed or unreachable file into :class:`~loffdata.errors.ShardReadError` naming it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from loffdata.errors import ShardReadError
from loffdata.protocols import PROTOCOLS
from loffdata.redact import install_log_redaction, redact_text

__all__ = ["RetryConfig", "is_transient", "with_retries", "with_retries_async"]

log = logging.getLogger(__name__)
install_log_redaction()  # retries log URLs: never with a password
T = TypeVar("T")

_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}
_CLIENT_MODULES = {m for p in PROTOCOLS for m in p.client_modules}
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


@dataclass(frozen=True)
class RetryConfig:
    """Timeouts and retries of remote reads.

    A request that gets no byte for ``timeout`` seconds fails and is retried; one that has
    not succeeded ``deadline`` seconds after its first try fails for good, with
    :class:`~loffdata.errors.ShardReadError` naming the URL. With the defaults a stalled
    server is given up after 30 s (three tries of 10 s).

    Attributes:
        attempts: tries per request (the first included).
        backoff: first delay in seconds; doubles after each failure.
        max_backoff: longest delay in seconds.
        timeout: seconds to connect, and seconds without a byte while reading (HTTP, S3).
        deadline: seconds a request may take with all its retries (``None``: no bound).
        block_size: bytes fetched per range request.
    """

    attempts: int = 6
    backoff: float = 0.2
    max_backoff: float = 10.0
    timeout: float = 10.0
    deadline: float | None = 30.0
    block_size: int = 8 << 20

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.block_size < 1:
            raise ValueError("attempts and block_size must be >= 1")
        if self.timeout <= 0 or (self.deadline is not None and self.deadline <= 0):
            raise ValueError("timeout and deadline must be > 0")

    def delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` consecutive failures."""
        return min(self.max_backoff, self.backoff * 2 ** (failures - 1))


def _status(err: BaseException) -> int | None:
    status = getattr(err, "status", None) or getattr(err, "status_code", None)
    response = getattr(err, "response", None)
    if status is None and isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status if isinstance(status, int) else None


def _store_code_is_transient(err: BaseException) -> bool:
    for protocol in PROTOCOLS:
        if protocol.error_code is not None and protocol.error_code(err) in protocol.transient_codes:
            return True
    return False


def is_transient(err: BaseException) -> bool:
    """Whether retrying could help: network trouble, timeouts, 5xx/429, throttling."""
    for e in (err, err.__cause__, err.__context__):
        if e is None or isinstance(e, _PERMANENT):
            continue
        if _store_code_is_transient(e):
            return True
        status = _status(e)
        if status is not None:
            return status in _TRANSIENT_STATUS or status >= 500
    if isinstance(err, _PERMANENT):
        return False
    if isinstance(err, (OSError, TimeoutError, ConnectionError, asyncio.TimeoutError)):
        return True
    return type(err).__module__.split(".")[0] in _CLIENT_MODULES


def _give_up(
    err: Exception, *, url: str, retry: RetryConfig, what: str, failures: int, t0: float
) -> ShardReadError | None:
    """The error to raise after ``failures`` failed tries ending in ``err``; ``None``: retry."""
    if isinstance(err, ShardReadError):
        return err  # already names the shard; a changed object is not retried
    if isinstance(err, _PERMANENT):
        return ShardReadError(
            f"shard {url!r} is missing or not readable ({type(err).__name__}: {err})"
        )
    if not is_transient(err):
        return ShardReadError(f"cannot {what} shard {url!r}: {type(err).__name__}: {err}")
    spent = time.monotonic() - t0
    late = retry.deadline is not None and spent + retry.delay(failures) >= retry.deadline
    if failures == retry.attempts or late:
        return ShardReadError(
            f"cannot {what} shard {url!r} after {failures} attempts ({spent:.1f} s): "
            f"{type(err).__name__}: {err}"
        )
    log.warning("%s", redact_text(f"retrying {what} of {url} after {type(err).__name__}: {err}"))
    return None


def _raise_unless_retry(
    err: Exception, *, url: str, retry: RetryConfig, what: str, failures: int, t0: float
) -> None:
    """Raises what :func:`_give_up` decides for ``err``; returns when a retry is due."""
    fatal = _give_up(err, url=url, retry=retry, what=what, failures=failures, t0=t0)
    if fatal is err:
        raise err
    if fatal is not None:
        raise fatal from err


def with_retries(fn: Callable[[], T], *, url: str, retry: RetryConfig, what: str = "read") -> T:
    """Calls ``fn`` until it succeeds, retrying transient errors with backoff.

    Raises:
        ShardReadError: naming ``url`` when the file is missing, changed, or stays
            unreachable (``retry.attempts`` tries, or past ``retry.deadline``).
    """
    t0 = time.monotonic()
    for failures in range(1, retry.attempts + 1):
        try:
            return fn()
        except Exception as err:
            _raise_unless_retry(err, url=url, retry=retry, what=what, failures=failures, t0=t0)
        time.sleep(retry.delay(failures))
    raise AssertionError("unreachable")  # pragma: no cover


async def with_retries_async(
    fn: Callable[[], Awaitable[T]], *, url: str, retry: RetryConfig, what: str = "read"
) -> T:
    """:func:`with_retries` for coroutines; each try is also cut at the deadline."""
    t0 = time.monotonic()
    for failures in range(1, retry.attempts + 1):
        try:
            left = (
                None
                if retry.deadline is None
                else max(0.001, retry.deadline - (time.monotonic() - t0))
            )
            return await asyncio.wait_for(fn(), left)
        except Exception as err:
            _raise_unless_retry(err, url=url, retry=retry, what=what, failures=failures, t0=t0)
        await asyncio.sleep(retry.delay(failures))
    raise AssertionError("unreachable")  # pragma: no cover
