"""One redaction rule for every message, log line and file loffdata writes.

Two things are secrets: the userinfo of a URL (``http://user:password@host/`` ->
``http://***@host/``) and the value of a secret-like key, at any depth: a key one of whose
words (``_``/``-``/camelCase separated, case-insensitive) is ``key``, ``secret``, ``token``,
``password``/``passwd``, ``authorization``, ``credential(s)``, ``apikey``, ``signature`` or
``sig`` (a signed URL's: S3, GCS, Azure SAS)
(``aws_secret_access_key``, ``Authorization``, ``sessionToken``, s3fs's ``key``). Their
values become ``***``; a file keeps the key, so it shows that a secret was given (and where
it came from: the environment or a profile keeps its own name), never its value. Sample
keys live under ``keys`` (plural) and are data, not secrets.

Bottom layer: standard library only. Applied at the choke points: :class:`~loffdata.errors.
LoffError` construction, :func:`loffdata.util.write_json`, checkpoints, every log record
(:func:`install_log_redaction`, installed by the storage layer) and the CLI guard.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "MASK",
    "install_log_redaction",
    "is_secret_key",
    "redact",
    "redact_text",
    "redact_json_text",
]

MASK = "***"
_WORDS = {
    "key",
    "secret",
    "token",
    "password",
    "passwd",
    "pwd",
    "authorization",
    "credential",
    "credentials",
    "apikey",
    "auth",
    "signature",
    "sig",  # Azure SAS (``?sig=``); S3 and GCS signed URLs say ``Signature``
}
_USERINFO = re.compile(r"://(?P<info>[^/@\s]+)@")  # a literal start: fast on a large text
_QUERY = re.compile(r"(?P<head>[?&;](?P<name>[A-Za-z0-9_.-]+)=)(?P<value>[^&#\s'\"<>]*)")
_PAIR = re.compile(  # 'name': 'value' / "name": "value" / name: value (reprs, YAML, headers)
    r"(?P<head>(?P<q>['\"]?)(?P<name>[A-Za-z0-9_.-]+)(?P=q)\s*:\s*)"
    r"(?P<value>b?'(?:[^'\\]|\\.)*'|b?\"(?:[^\"\\]|\\.)*\"|(?:Bearer|Basic|Token)\s+[^\s,'\"{}\[\]]+|[^\s,'\"{}\[\]]+)",
    re.IGNORECASE,
)
_ASSIGN = re.compile(
    r"(?P<head>\b(?P<name>[A-Za-z0-9_.-]+)=)(?P<value>'[^']*'|\"[^\"]*\"|[^\s,&'\")]+)"
)
_BEARER = re.compile(r"(?P<kind>Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{6,}")
_NOT_KEYS = ("Error", "Exception", "Warning")  # "KeyError: 'k0'" names an exception, not a key
_QUICK = re.compile(r"key|secret|token|pass|pwd|auth|credential|sig", re.IGNORECASE)


def is_secret_key(name: Any) -> bool:
    """Whether a mapping key names a secret (see the module docs)."""
    if not isinstance(name, str) or not _QUICK.search(name) or name.endswith(_NOT_KEYS):
        return False
    snake = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()
    return any(w in _WORDS for w in re.split(r"[^a-z0-9]+", snake))


def _mask_value(value: str) -> str:
    value = value[1:] if value[:2] in ("b'", 'b"') else value  # bytes reprs (botocore's headers)
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{quote}{MASK}{quote}"


def _pair(match: re.Match) -> str:
    if not is_secret_key(match["name"]) or match["value"] in ("None", "null", "''", '""'):
        return match[0]
    return match["head"] + _mask_value(match["value"])


def _assign(match: re.Match) -> str:  # name=value; key= is a sample key in loffdata's messages
    if (
        match["name"].lower() == "key"
        or not is_secret_key(match["name"])
        or match["value"] in ("None", "''")
    ):
        return match[0]
    return match["head"] + _mask_value(match["value"])


def _query(match: re.Match) -> str:
    return match["head"] + MASK if is_secret_key(match["name"]) and match["value"] else match[0]


def redact_text(text: str) -> str:
    """``text`` with URL userinfo, secret query parameters, ``key: value`` pairs of secret
    keys and ``Bearer``/``Basic`` credentials replaced by ``***``."""
    if not isinstance(text, str) or not text:
        return text
    text = _USERINFO.sub(f"://{MASK}@", text) if "@" in text else text
    if not _QUICK.search(text):
        return text
    if "=" in text:
        text = _ASSIGN.sub(_assign, _QUERY.sub(_query, text))
    text = _PAIR.sub(_pair, text) if ":" in text else text
    return _BEARER.sub(lambda m: f"{m['kind']} {MASK}", text)


def redact(obj: Any) -> Any:
    """A copy of ``obj`` (mappings, lists, tuples, strings, nested) with secret values
    masked: the value of a secret-like key becomes ``"***"`` (``None`` and empty values
    stay, they hold nothing), and every string goes through :func:`redact_text`."""
    if isinstance(obj, str):
        return redact_text(obj)
    if isinstance(obj, Mapping):
        return {
            k: (
                MASK
                if is_secret_key(k)
                and obj[k] not in (None, "", {}, [])
                and not isinstance(obj[k], bool)
                else redact(obj[k])
            )
            for k in obj
        }
    if isinstance(obj, (list, tuple)):
        items = [redact(v) for v in obj]
        return items if isinstance(obj, list) else tuple(items)
    return obj


_JSON_VALUE = re.compile(r'\s*("(?:[^"\\]|\\.)*"|-?\d[\d.eE+-]*)')


def _mask_json_pairs(text: str) -> str:
    """Masks the string or number value of every secret-like key of JSON text.

    Visits every ``":`` (the end of an object key: one per key, found by a fast literal
    search) and checks the key before it, so a manifest of millions of sample keys in
    lists costs one look per object key, not per character.
    """
    parts, last, at = [], 0, text.find('":')
    while at >= 0:
        start = text.rfind('"', 0, at)
        nxt = at + 2
        if start >= 0 and is_secret_key(text[start + 1 : at]):
            value = _JSON_VALUE.match(text, at + 2)
            if value is not None and value.group(1) != '""':
                parts += [text[last : value.start(1)], f'"{MASK}"']
                last = nxt = value.end(1)
        at = text.find('":', nxt)
    return "".join(parts) + text[last:] if parts else text


def redact_json_text(text: str) -> str:
    """JSON text with secret values masked, without parsing it (fast on a large manifest:
    literal searches over the text and one look per object key; a secret-like key's string
    or number becomes ``"***"``, URL userinfo anywhere becomes ``***``)."""
    if "@" in text:
        text = _USERINFO.sub(f"://{MASK}@", text)
    text = _mask_json_pairs(text)
    text = _QUERY.sub(_query, text) if "=" in text else text
    return _BEARER.sub(lambda m: f"{m['kind']} {MASK}", text)


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a record that cannot format itself is left alone
        return
    record.msg, record.args = redact_text(message), ()
    if record.exc_info and not record.exc_text:
        record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))


_installed: list[Any] = []


def install_log_redaction() -> None:
    """Makes every log record of the process redacted when it is made (once; idempotent).

    The storage libraries under loffdata (fsspec, s3fs, botocore, aiohttp) log URLs and,
    at DEBUG level, request parameters from loggers loffdata does not own; wrapping the
    record factory is the one place every record passes. A record below its logger's level
    is never made, so quiet loggers cost nothing.
    """
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _redact_record(record)
        return record

    _installed.append(factory)
    logging.setLogRecordFactory(factory)
