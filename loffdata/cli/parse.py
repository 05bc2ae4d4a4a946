"""The one layer in front of every loffdata CLI: flags from dataclasses, checked before work.

A CLI declares its options once, as the fields of a config dataclass (``ExtractConfig``,
``TrainConfig``) or the keyword arguments of a function, with their docs in the Google-style
docstring. This module turns that into flags, ``--help``/``-h`` text with every default and
doc, and a parser that checks every flag name, value and config-file key **before** the
command does any work::

    argv -> parse_flags -> (config file: load_config_file) -> coerce to the field types
         -> values for the dataclass / function, or a CliError naming the flag or the file key

Config files (``--config FILE``) are YAML (``.yaml``/``.yml``) or JSON (``.json``); a file
sets defaults, flags given on the command line win. Only ``yaml``, ``json`` and ``difflib``
are imported here, so ``--help`` answers in well under a second.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import re
import sys
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from loffdata.cli.guard import run
from loffdata.cli.values import BOOL_WORDS, CliError, coerce, is_bool, load_config_file, type_name

__all__ = [
    "CliError",
    "Option",
    "REQUIRED",
    "coerce",
    "docstring_summary",
    "docstring_entries",
    "format_help",
    "build",
    "parse_config",
    "load_config_file",
    "nest",
    "options_from_dataclass",
    "options_from_function",
    "parse_command",
    "parse_flags",
    "run",
    "suggest",
]

REQUIRED: Any = inspect.Parameter.empty
_HELP = ("-h", "--help")


@dataclass(frozen=True)
class Option:
    """One command-line option.

    Attributes:
        name: flag name without dashes (``img_size``); nested config fields are dotted.
        default: default value, or :data:`REQUIRED`.
        type: the annotation (resolved), used to check and convert values.
        doc: one-paragraph description from the docstring.
        positional: given without a flag name (``loffdata inspect DIR``).
    """

    name: str
    default: Any = None
    type: Any = Any
    doc: str = ""
    positional: bool = False


def suggest(name: str, known: Sequence[str], *, prefix: str = "--") -> str:
    """`` (did you mean --x?)`` for the closest known name, or ``""``."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


# --- options from a docstring, a dataclass, a function -----------------------------------------


def docstring_entries(doc: str | None, section: str) -> dict[str, str]:
    """``name -> text`` of a Google-style docstring section (``Attributes`` or ``Args``)."""
    entries: dict[str, str] = {}
    lines = inspect.cleandoc(doc or "").splitlines()
    inside, indent, current = False, None, None
    for line in lines:
        if line.strip() == f"{section}:":
            inside, indent, current = True, None, None
            continue
        if not inside:
            continue
        if line.strip() and not line.startswith(" "):
            break  # next section
        match = re.match(r"^(\s+)(\*{0,2}[A-Za-z_][\w.]*)(?: \(.*?\))?: ?(.*)$", line)
        if match and (indent is None or len(match.group(1)) == indent):
            indent, current = len(match.group(1)), match.group(2).lstrip("*")
            entries[current] = match.group(3).strip()
        elif current and line.strip():
            entries[current] = f"{entries[current]} {line.strip()}".strip()
    return entries


def docstring_summary(doc: str | None) -> str:
    """The first paragraph of a docstring, on one line."""
    text = inspect.cleandoc(doc or "")
    return text.split("\n\n", 1)[0].replace("\n", " ")


def options_from_dataclass(
    cls: type, *, exclude: Sequence[str] = (), prefix: str = ""
) -> list[Option]:
    """Options for the fields of dataclass ``cls``; a dataclass-typed field is flattened (``a.b``).

    ``exclude``: field names left out, dotted for fields of a nested dataclass (``a.b``).
    """
    hints = typing.get_type_hints(cls)
    docs = docstring_entries(cls.__doc__, "Attributes")
    options = []
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.init:
            continue
        kind = hints.get(f.name, Any)
        if dataclasses.is_dataclass(kind):
            inner = [e.split(".", 1)[1] for e in exclude if e.startswith(f"{f.name}.")]
            options += options_from_dataclass(kind, exclude=inner, prefix=f"{prefix}{f.name}.")
            continue
        default = f.default
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        if default is dataclasses.MISSING:
            default = REQUIRED
        options.append(Option(f"{prefix}{f.name}", default, kind, docs.get(f.name, "")))
    return options


def options_from_function(fn: Callable) -> list[Option]:
    """Options for ``fn``'s parameters: positional ones without a default are positional."""
    hints = typing.get_type_hints(fn)
    docs = docstring_entries(fn.__doc__, "Args")
    options = []
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        positional = p.kind != p.KEYWORD_ONLY and p.default is p.empty
        options.append(
            Option(p.name, p.default, hints.get(p.name, Any), docs.get(p.name, ""), positional)
        )
    return options


# --- values -------------------------------------------------------------------------------------


# --- config files -------------------------------------------------------------------------------


def _flatten(values: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """Mappings under a nested config's name (``stream: {a: 1}``) become dotted keys
    (``stream.a``)."""
    groups = {n.split(".", 1)[0] for n in names if "." in n}
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and key in groups:
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


# --- the command line ---------------------------------------------------------------------------


def _flag_value(argv: list[str], i: int, opt: Option, inline: str | None) -> tuple[str, int]:
    if inline is not None:
        return inline, i + 1
    flag = is_bool(opt.type)
    nxt = argv[i + 1] if i + 1 < len(argv) else None
    if flag and (nxt is None or nxt.startswith("--") or nxt.lower() not in BOOL_WORDS):
        return "true", i + 1
    if nxt is None or nxt.startswith("--"):
        raise CliError(f"--{opt.name} needs a value ({type_name(opt.type)})")
    return nxt, i + 2


def parse_flags(argv: Sequence[str], options: Sequence[Option]) -> tuple[list[str], dict[str, str]]:
    """Splits ``argv`` into positionals and ``{name: text}``; unknown flags raise :class:`CliError`.

    ``--name value``, ``--name=value``, a bare ``--name`` for a bool (``--noname``: false).
    """
    argv, by_name = list(argv), {o.name: o for o in options}
    positionals: list[str] = []
    flags: dict[str, str] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--") or token == "--":
            positionals.append(token)
            i += 1
            continue
        name, _, inline = token[2:].partition("=")
        name = name.replace("-", "_") if name.replace("-", "_") in by_name else name
        if (
            name not in by_name
            and name.startswith("no")
            and is_bool(getattr(by_name.get(name[2:]), "type", None))
        ):
            flags[name[2:]], i = "false", i + 1
            continue
        if name not in by_name:
            raise CliError(f"unknown flag --{name}{suggest(name, list(by_name))}; see --help")
        flags[name], i = _flag_value(argv, i, by_name[name], inline if "=" in token else None)
    return positionals, flags


def _resolve(argv: Sequence[str], options: Sequence[Option], config_file: bool) -> dict[str, Any]:
    opts = [*options, Option("config", None, str | None)] if config_file else list(options)
    positionals, flags = parse_flags(argv, opts)
    slots = [o for o in options if o.positional]
    if len(positionals) > len(slots):
        raise CliError(f"unexpected argument {positionals[len(slots)]!r}; see --help")
    values = {o.name: o.default for o in options}
    path = flags.pop("config", None)
    if path is not None:
        _apply_file(values, path, {o.name: o for o in options if not o.positional})
    by_name = {o.name: o for o in options}
    for slot, text in zip(slots, positionals):
        flags[slot.name] = text
    for name, text in flags.items():
        try:
            values[name] = coerce(text, by_name[name].type, text=text)
        except ValueError as err:
            raise CliError(f"--{name}: {err}") from None
    missing = [o.name for o in options if values[o.name] is REQUIRED]
    if missing:
        raise CliError(
            "missing "
            f"{', '.join(n.upper() if by_name[n].positional else '--' + n for n in missing)}; see "
            "--help"
        )
    return values


def _apply_file(values: dict[str, Any], path: str, by_name: dict[str, Option]) -> None:
    for key, value in _flatten(load_config_file(path), list(by_name)).items():
        if key not in by_name:
            raise CliError(f"{path}: unknown key {key!r}{suggest(key, list(by_name), prefix='')}")
        try:
            values[key] = coerce(value, by_name[key].type)
        except ValueError as err:
            raise CliError(f"{path}: key {key!r}: {err}") from None


def build(cls: type, values: dict[str, Any]) -> Any:
    """``cls(**values)``, dotted keys built into the nested config dataclasses first.

    Raises:
        CliError: the dataclass refused a value (its ``ValueError`` message, flag-named).
    """
    hints = typing.get_type_hints(cls)
    kwargs = nest(values)
    for name, value in kwargs.items():
        if isinstance(value, dict) and dataclasses.is_dataclass(hints.get(name)):
            kwargs[name] = build(hints[name], value)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        text = str(err)
        first = text.split(" ", 1)[0]
        raise CliError(f"--{text}" if first in values else text) from None


def parse_config(
    cls: type, options: Sequence[Option], argv: Sequence[str] | None, *, prog: str, doc: str | None
) -> Any:
    """The config dataclass ``cls`` of a command line (``sys.argv[1:]`` when ``argv`` is
    None), every flag checked; None when it asked for ``--help``."""
    values = parse_command(
        sys.argv[1:] if argv is None else list(argv), options, prog=prog, doc=doc
    )
    return None if values is None else build(cls, values)


def nest(values: dict[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1, "c": 2}`` -> ``{"a": {"b": 1}, "c": 2}`` (dotted options of nested configs)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        head, dot, rest = key.partition(".")
        if dot:
            out.setdefault(head, {})[rest] = value
        else:
            out[key] = value
    return out


# --- help and the entry point -------------------------------------------------------------------


def _default_text(opt: Option) -> str:
    if opt.default is REQUIRED:
        return "required"
    return (
        json.dumps(opt.default)
        if isinstance(opt.default, (dict, list, bool, type(None)))
        else str(opt.default)
    )


def format_help(
    prog: str, doc: str | None, options: Sequence[Option], *, config_file: bool = True
) -> str:
    """The ``--help`` text: usage, the summary of ``doc``, and every option with default and doc."""
    pos = " ".join(o.name.upper() for o in options if o.positional)
    lines = [
        f"usage: {prog} {pos + ' ' if pos else ''}[--option VALUE ...]",
        "",
        docstring_summary(doc),
        "",
    ]
    if config_file:
        lines += [
            "  --config FILE",
            "        YAML (.yaml/.yml) or JSON (.json) file of option: value pairs;",
            "        flags given on the command line win.",
            "",
        ]
    for o in options:
        head = o.name.upper() if o.positional else f"--{o.name} {_metavar(o.type)}"
        default = "" if o.positional else f"  (default: {_default_text(o)})"
        lines += [f"  {head}{default}", *_wrap(o.doc or "(undocumented)"), ""]
    return "\n".join(lines).rstrip() + "\n"


def _metavar(kind: Any) -> str:
    """``INT|NULL``; a bool is a switch: ``[true|false]`` (a bare ``--flag`` is true)."""
    if kind is bool:
        return "[true|false]"
    return type_name(kind).upper().replace(" OR ", "|")


def _wrap(text: str, width: int = 88) -> list[str]:
    import textwrap

    plain = re.sub(r"``(['\"]?)(.*?)\1``", r"'\2'", text)  # ``"pad"`` and ``pad`` print as 'pad'
    return textwrap.wrap(
        plain, width, initial_indent=" " * 8, subsequent_indent=" " * 8, break_on_hyphens=False
    )


def parse_command(
    argv: Sequence[str],
    options: Sequence[Option],
    *,
    prog: str,
    doc: str | None,
    config_file: bool = True,
) -> dict[str, Any] | None:
    """Values for ``options`` from ``argv``; prints help and returns ``None`` for ``-h``/``--help``.

    Raises:
        CliError: an unknown flag (with the closest match), a bad value, a bad config file.
    """
    if any(a in _HELP for a in argv):
        sys.stdout.write(format_help(prog, doc, options, config_file=config_file))
        return None
    return _resolve(argv, options, config_file)
