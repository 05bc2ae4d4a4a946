"""Values of CLI options: conversion to the annotated types, and YAML/JSON config files.

Used by :mod:`loffdata.cli.parse`; a flag's text and a config file's value go through the same
:func:`coerce`, so ``--epochs 3`` and ``epochs: 3`` are checked alike.
"""

from __future__ import annotations

import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from loffdata.errors import CliError, LoffError
from loffdata.safeio import MAX_CONFIG_BYTES, MAX_DEPTH, loads_json, read_regular

__all__ = ["BOOL_WORDS", "CliError", "coerce", "is_bool", "load_config_file", "type_name"]

_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
_NONE = ("none", "null", "~")
BOOL_WORDS = _TRUE + _FALSE


def _arms(kind: Any) -> tuple[Any, ...]:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return typing.get_args(kind)
    return (kind,)


def type_name(kind: Any) -> str:
    names = []
    for arm in _arms(kind):
        origin = typing.get_origin(arm) or arm
        names.append(
            {
                type(None): "null",
                dict: "mapping",
                Mapping: "mapping",
                list: "list",
                tuple: "list",
                Sequence: "list",
            }.get(origin, getattr(origin, "__name__", str(origin)))
        )
    return " or ".join(names)


#: Most nodes a YAML document may expand to (aliases counted at every use) and deepest nesting.
MAX_YAML_NODES, MAX_YAML_DEPTH = 100_000, MAX_DEPTH


def _children(node: Any) -> list[Any]:
    if node.id == "mapping":
        return [c for pair in node.value for c in pair]
    return list(node.value) if node.id == "sequence" else []


def _expanded(node: Any, where: str) -> None:
    """Refuses a composed YAML graph that expands past the limits (an alias bomb, deep nesting)."""
    sizes: dict[int, int] = {}
    stack: list[tuple[Any, int, bool]] = [(node, 1, False)]
    while stack:
        item, depth, done = stack.pop()
        if depth > MAX_YAML_DEPTH:
            raise CliError(f"{where}: nested more than {MAX_YAML_DEPTH} levels deep")
        kids = _children(item)
        if done:
            sizes[id(item)] = 1 + sum(sizes[id(k)] for k in kids)
            if sizes[id(item)] > MAX_YAML_NODES:
                raise CliError(
                    f"{where}: expands to more than {MAX_YAML_NODES} values (YAML aliases); refused"
                )
        elif id(item) not in sizes:
            stack.append((item, depth, True))
            stack.extend((k, depth + 1, False) for k in kids if id(k) not in sizes)


def load_yaml(text: str, *, where: str) -> Any:
    """``yaml.safe_load`` within limits: aliases may not expand past :data:`MAX_YAML_NODES`
    values, nesting past :data:`MAX_YAML_DEPTH` levels.

    Raises:
        CliError: naming ``where`` for a document past the limits.
        yaml.YAMLError: for text that is not YAML.
    """
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded(node, where)
        return loader.construct_document(node)
    except RecursionError:
        raise CliError(f"{where}: nested too deeply") from None
    finally:
        loader.dispose()


def _parse_text(text: str) -> Any:
    import yaml

    try:
        return load_yaml(text, where=f"value {text[:40]!r}")
    except yaml.YAMLError:
        return text


def _coerce_arm(value: Any, arm: Any, text: str | None) -> Any:
    origin = typing.get_origin(arm) or arm
    if arm is Any:
        if text is None:  # a config file's value: already typed
            return value
        parsed = _parse_text(text)
        return text if isinstance(parsed, str) else parsed
    if arm is type(None):
        if value is None or str(value).lower() in _NONE:
            return None
    elif origin is bool:
        word = str(value).lower()
        if isinstance(value, bool) or word in _TRUE + _FALSE:
            return value if isinstance(value, bool) else word in _TRUE
    elif origin is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
            return int(value)
    elif origin is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    elif origin is str:
        if isinstance(value, str):
            return value
        if text is None and isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    elif origin in (dict, Mapping):
        parsed = _parse_text(value) if isinstance(value, str) else value
        if isinstance(parsed, dict):
            return dict(parsed)
    elif origin in (list, tuple, Sequence):
        return _coerce_sequence(value, arm, text)
    else:
        return value
    raise ValueError


def _coerce_sequence(value: Any, arm: Any, text: str | None) -> list[Any] | tuple[Any, ...]:
    """A list or tuple option: ``[1, 2]`` (YAML) or ``1,2`` on the command line, items checked."""
    parsed = _parse_text(value) if isinstance(value, str) else value
    if isinstance(parsed, str) and text is not None:
        parsed = [part.strip() for part in parsed.split(",")] if parsed.strip() else []
    if not isinstance(parsed, (list, tuple)):
        raise ValueError
    args = [a for a in typing.get_args(arm) if a is not Ellipsis]
    if args and len(set(args)) == 1:  # tuple[int, ...], list[int], tuple[int, int]: one item type
        fixed = typing.get_origin(arm) is tuple and Ellipsis not in typing.get_args(arm)
        if fixed and len(parsed) != len(args):
            raise ValueError
        parsed = [
            coerce(item, args[0], text=item if isinstance(item, str) else None) for item in parsed
        ]
    return tuple(parsed) if (typing.get_origin(arm) or arm) is tuple else list(parsed)


def coerce(value: Any, kind: Any, *, text: str | None = None) -> Any:
    """``value`` converted to annotation ``kind``; ``ValueError`` when it cannot be.

    Args:
        value: a value from a config file, or the text of a flag.
        kind: the option's annotation (``int | None``, ``dict[str, Any]``, ``Any`` ...).
        text: the flag's raw text, if the value came from the command line (a ``str``
            option keeps it verbatim; ``Any`` parses it as YAML: ``{a: 1}``, ``[x, y]``).
    """
    arms = sorted(_arms(kind), key=lambda a: a is not type(None))  # try null first
    for arm in arms:
        try:
            return _coerce_arm(value, arm, text)
        except ValueError:
            continue
    raise ValueError(f"expected {type_name(kind)}, got {value!r}")


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping in a YAML (``.yaml``/``.yml``) or JSON (``.json``) file.

    Raises:
        CliError: the file is missing, not valid YAML/JSON, or not a mapping; names the file.
    """
    import yaml

    path = os.fspath(path)
    try:
        data = read_regular(path, limit=MAX_CONFIG_BYTES, what="config file")
    except LoffError as err:  # a FIFO, a device (/dev/zero), too large
        raise CliError(f"--config {path}: {err}") from None
    except OSError as err:
        raise CliError(f"--config {path}: cannot read the file ({err.strerror or err})") from None
    try:
        text = data.decode("utf-8")
        values = (
            loads_json(text, where=path) if path.endswith(".json") else load_yaml(text, where=path)
        )
    except UnicodeDecodeError as err:
        raise CliError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except ValueError as err:  # strict JSON: not JSON, NaN, too deep
        raise CliError(
            str(err).replace(f"{path} is not valid JSON", f"{path}: not valid JSON")
        ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise CliError(f"{path}: not valid YAML{where}: {getattr(err, 'problem', err)}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise CliError(f"{path}: expected a mapping of option: value, got {type(values).__name__}")
    return values


def is_bool(kind: Any) -> bool:
    """Whether annotation ``kind`` admits a bool (a bare ``--flag`` means true)."""
    return bool in _arms(kind)
