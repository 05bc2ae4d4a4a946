"""Fuzzing the inputs a user or a hostile file controls (issue 22): manifests, shard names,
prefixes, config files, flag values and whole command lines.

Every generated input ends in a valid result or a ``LoffError`` naming the place (the
file, the field or the flag), never in another exception; each example has a deadline, so
a hang or an exponential blow-up (a YAML alias bomb, deep nesting) fails the test.
"""

from __future__ import annotations

import gc
import json
import os
import tempfile
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loffdata.cli import parse
from loffdata.cli.main import COMMANDS, _resolve
from loffdata.cli.values import CliError, load_config_file
from loffdata.errors import LocationError, LoffError, ManifestError
from loffdata.format.manifest import Manifest, check_shard_name
from loffdata.format.names import check_prefix, resolve_name
from loffdata.redact import redact_text

FUZZ = settings(
    max_examples=150,
    deadline=timedelta(seconds=10),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

VALID = {
    "format": "loffdata.shards",
    "version": 1,
    "num_samples": 2,
    "features": {"shape": [8, 4, 4], "dtype": "float16", "layout": "CHW"},
    "classes": ["a", "b"],
    "extras": {},
    "stats": None,
    "source": {"model": "m"},
    "skipped": [],
    "shards": [{"name": "shard-000000.tar", "samples": 2, "bytes": 10240, "sha256": "0" * 64}],
}

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)


def _mutate(draw_field: str, value) -> bytes:
    d = json.loads(json.dumps(VALID))
    if draw_field.startswith("shards."):
        d["shards"][0][draw_field.split(".", 1)[1]] = value
    else:
        d[draw_field] = value
    return json.dumps(d).encode()


FIELDS = [*VALID, "shards.name", "shards.samples", "shards.bytes", "shards.sha256", "shards.index"]


def _manifest_or_error(data: bytes) -> None:
    try:
        m = Manifest.from_bytes(data, where="'fuzz.json'")
    except ManifestError as err:
        assert "fuzz.json" in str(err) or "shard" in str(err), err
        return
    assert m.num_samples >= 0 and all(
        not resolve_name(s.name).startswith(("../", "/")) for s in m.shards
    )


@FUZZ
@given(st.sampled_from(FIELDS), json_values)
def test_manifest_fields(field, value):
    _manifest_or_error(_mutate(field, value))


@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_manifest_bytes(data):
    _manifest_or_error(data)


_COLLECTED: list[bool] = []


@FUZZ
@given(st.integers(1, 5000), st.sampled_from(["[", '{"a":']))
def test_manifest_nesting(depth, opener):
    # finalizers left by earlier tests (a DataLoader iterator's __del__) must not run inside
    # json's deep recursion, where even formatting their traceback exceeds the limit: once
    # per session (a collection per example would cost seconds)
    if not _COLLECTED:
        gc.collect()
        _COLLECTED.append(True)
    closer = "]" if opener == "[" else "}"
    text = (
        json.dumps(VALID)[:-1]
        + ', "deep": '
        + opener * depth
        + ("0" if opener != "[" else "")
        + closer * depth
        + "}"
    )
    _manifest_or_error(text.encode())


names = st.lists(
    st.sampled_from(list("ab./%2eE5Cf\\?#-_ ") + ["%2e", "%2f", "%25", "..", "%00"]), max_size=12
).map("".join)


@FUZZ
@given(names)
def test_shard_names_stay_inside(name):
    try:
        normal = check_shard_name(name)
    except ManifestError:
        return
    resolved = resolve_name(normal)
    assert resolved and not resolved.startswith(("/", "../")) and ".." not in resolved.split("/")
    assert not os.path.basename(resolved).startswith(".")


@FUZZ
@given(names)
def test_prefixes_are_plain_stems(prefix):
    try:
        check_prefix(prefix)
    except LocationError:
        return
    name = f"{prefix}-000000.tar"
    assert (
        "/" not in name
        and "\\" not in name
        and resolve_name(name) == name
        and not name.startswith(".")
    )


yaml_docs = st.one_of(
    st.text(max_size=200),
    st.lists(
        st.sampled_from(
            [
                "a: &a [1, 2]",
                "b: [*a, *a, *a]",
                "c: {x: *a}",
                "- x",
                "epochs: 3",
                "? [a]",
                "{",
                "[[[[",
                "*b",
                "&x y",
                ": :",
                "'",
                "!!python/object:os.system 1",
                "storage_options: {key: 1}",
                "d: " + "[" * 200 + "]" * 200,
            ]
        ),
        max_size=8,
    ).map("\n".join),
)


@FUZZ
@given(yaml_docs, st.sampled_from([".yaml", ".json"]))
def test_config_files(text, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"c{suffix}")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        try:
            values = load_config_file(path)
        except CliError as err:
            assert path in str(err), err
            return
        assert isinstance(values, dict)


def _command_options():
    out = []
    for name, command in COMMANDS.items():
        fn = _resolve(command)
        out.append((name, fn, parse.options_from_function(fn)))
    return out


COMMAND_OPTIONS = _command_options()
tokens = st.sampled_from(
    [
        "--pool",
        "--dtype",
        "--quiet",
        "--noquiet",
        "--samples",
        "--storage_options",
        "--config",
        "--prefix",
        "--force",
        "--max_samples",
        "--crop",
        "x",
        "0",
        "-5",
        "2",
        "int8",
        "float8",
        "{a: 1}",
        "[1, 2]",
        "{key: &a [1], b: [*a, *a]}",
        "none",
        "true",
        "4.7",
        "--",
        "--=",
        "--pool=3",
        "--unknown",
        "DIR",
        "/dev/zero",
    ]
)


@FUZZ
@given(st.sampled_from(COMMAND_OPTIONS), st.lists(tokens, max_size=8))
def test_command_lines_parse_or_name_the_flag(command, argv):
    name, fn, options = command
    try:
        values = parse.parse_command(argv, options, prog=f"loffdata {name}", doc=fn.__doc__)
    except CliError as err:
        assert str(err), err
        return
    assert values is None or set(values) == {o.name for o in options}


def test_the_fuzzed_parser_is_sharp():
    """A control: the tokens above do reach the error paths (not only the happy one)."""
    _, fn, options = next(c for c in COMMAND_OPTIONS if c[0] == "convert")
    with pytest.raises(CliError, match="--unknown"):
        parse.parse_command(["a", "b", "--unknown"], options, prog="x", doc=fn.__doc__)
    with pytest.raises(CliError, match="config"):
        parse.parse_command(["a", "b", "--config", "/dev/zero"], options, prog="x", doc=fn.__doc__)


@FUZZ
@given(
    st.text(
        st.characters(blacklist_characters="@/:", blacklist_categories=("Cs", "Zs", "Cc")),
        min_size=6,
        max_size=20,
    ),
    st.text(max_size=30),
)
def test_userinfo_never_survives_redaction(password, around):
    text = f"{around} http://u:{password}@host/x {around}"
    assert f":{password}@" not in redact_text(text)


@FUZZ
@given(st.sampled_from(["inspect", "verify", "index"]), st.lists(tokens, max_size=5))
def test_whole_commands_end_in_a_loff_error_or_a_result(tmp_path_factory, command, argv):
    from loffdata.cli.main import main as cli_main

    root = tmp_path_factory.getbasetemp() / "fuzz-missing"
    try:
        cli_main([command, str(root), *argv])
    except SystemExit as exit_:
        assert exit_.code in (0, 1, 2), exit_.code  # 3 would be an internal error: a bug
    except LoffError:
        pytest.fail("the guard should have turned it into an exit")
