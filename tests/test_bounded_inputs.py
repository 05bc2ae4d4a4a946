"""Bounded parsing (issue 22, items 8, 13, 14, 15, 17 and the stalled-manifest low item).

Config files and manifests have size, depth and alias limits; only regular files are read
(a FIFO or a symlink to ``/dev/zero`` is refused before a byte is read, so nothing hangs);
a symlink to a shard of another dataset is refused; manifests are strict UTF-8 JSON with
typed fields. Every case ends in one ``LoffError`` naming the file (or field), through the
loader, ``inspect``, ``verify``, ``index`` and the config-file readers of every CLI.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path

import pytest

from loffdata.cli.main import main as cli_main
from loffdata.cli.values import CliError, coerce, load_config_file
from loffdata.errors import LoffError, ManifestError
from loffdata.format.index import index_dataset
from loffdata.format.manifest import Manifest
from loffdata.loader import LoffLoader
from loffdata.ops.verify import verify
from loffdata.stream.dataset import StreamingDataset
from tests.servers import http_server  # noqa: F401

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi")
)


def _finishes(fn, seconds: float = 60.0):
    """Runs ``fn`` in a thread; its exception or result, or a failure if it never ends."""
    out: dict = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as err:  # noqa: BLE001 - handed to the test
            out["error"] = err

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)  # a deadline for a hang, not a timing assertion: the work takes milliseconds
    assert not t.is_alive(), "the read hangs"
    return out.get("error", out.get("value"))


def _cli(argv, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        cli_main(argv)
    captured = capsys.readouterr()
    return exit_.value.code, captured.out, captured.err


# --- config files (item 13) ---------------------------------------------------------------------


@pytest.fixture
def fifo(tmp_path) -> Path:
    path = tmp_path / "fifo.yaml"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize(
    "case", ["alias bomb", "/dev/zero", "fifo", "deep json", "deep yaml", "utf-16", "nan json"]
)
def test_config_files_are_bounded(tmp_path, fifo, case):
    path = {
        "alias bomb": tmp_path / "bomb.yaml",
        "/dev/zero": Path("/dev/zero"),
        "fifo": fifo,
        "deep json": tmp_path / "deep.json",
        "deep yaml": tmp_path / "deep.yaml",
        "utf-16": tmp_path / "u16.yaml",
        "nan json": tmp_path / "nan.json",
    }[case]
    if case == "alias bomb":
        path.write_text("storage_options:\n" + "".join(f"  {line}\n" for line in BOMB.splitlines()))
    elif case == "deep json":
        path.write_text("[" * 3000 + "]" * 3000)
    elif case == "deep yaml":
        path.write_text("a: " + "[" * 3000 + "]" * 3000)
    elif case == "utf-16":
        path.write_bytes("epochs: 3\n".encode("utf-16"))
    elif case == "nan json":
        path.write_text('{"lr": NaN}')
    err = _finishes(lambda: load_config_file(path))
    assert isinstance(err, CliError), err
    assert str(path) in str(err)


def test_an_alias_bomb_in_a_flag_value_is_refused():
    err = _finishes(
        lambda: coerce("{" + BOMB.replace("\n", ", ").rstrip(", ") + "}", dict, text="x")
    )
    assert isinstance(err, ValueError), err


def test_config_file_limits_through_a_cli(tmp_path, capsys):
    (tmp_path / "bomb.yaml").write_text(
        "storage_options:\n" + "".join(f"  {line}\n" for line in BOMB.splitlines())
    )
    for path in (tmp_path / "bomb.yaml", "/dev/zero"):
        code, _, err = _cli(["inspect", str(tmp_path), "--config", str(path)], capsys)
        assert code == 2 and err.startswith("error:") and "Traceback" not in err, err


# --- manifests (items 15, 17) -------------------------------------------------------------------


def _mutated(make_dataset, change) -> Path:
    root, _ = make_dataset(6, 3)
    d = json.loads((root / "manifest.json").read_text())
    text = change(d)
    (root / "manifest.json").write_bytes(
        text if isinstance(text, bytes) else (json.dumps(d) if text is None else text).encode()
    )
    return root


MANIFEST_CASES = {
    "3000 deep": (
        lambda d: json.dumps(d)[:-1] + ', "deep": ' + "[" * 3000 + "]" * 3000 + "}",
        "nested too deeply",
    ),
    "utf-16": (lambda d: json.dumps(d).encode("utf-16"), "not UTF-8"),
    "NaN token": (lambda d: json.dumps(d).replace('"version": 1', '"version": 1, "x": NaN'), "NaN"),
    "extras as a list": (lambda d: d.update(extras=["pooled"]), "'extras'"),
    "skipped as a string": (lambda d: d.update(skipped="none"), "'skipped'"),
    "source as a list": (lambda d: d.update(source=[1, 2]), "'source'"),
    "shards as an object": (lambda d: d.update(shards={"a": 1}), "'shards'"),
}


@pytest.mark.parametrize("case", list(MANIFEST_CASES))
def test_bad_manifests_are_manifest_errors_on_every_path(make_dataset, capsys, case):
    change, message = MANIFEST_CASES[case]
    root = _mutated(make_dataset, change)
    with pytest.raises(ManifestError, match=message):
        LoffLoader(str(root), batch_size=2, num_workers=0, augment=None)
    with pytest.raises(ManifestError, match=message):
        StreamingDataset(str(root))
    report = verify(str(root), progress=False)
    assert not report.ok and message.strip("'") in str(report.problems[0])
    for command in ("inspect", "verify", "index"):
        code, _, err = _cli(
            [command, str(root), *(["--quiet"] if command == "verify" else [])], capsys
        )
        assert code == 1 and "Traceback" not in err


def test_inspect_never_prints_a_huge_line(make_dataset, capsys):
    root = _mutated(make_dataset, lambda d: d["source"].update(note="x" * 5_000_000))
    cli_main(["inspect", str(root)])
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 400 and re.search(
        r"\(50000\d\d characters\)", out
    )


def test_a_manifest_that_is_a_fifo_is_refused(make_dataset):
    root, _ = make_dataset(6, 3)
    (root / "manifest.json").unlink()
    os.mkfifo(root / "manifest.json")
    err = _finishes(lambda: Manifest.load(str(root)))
    assert isinstance(err, ManifestError) and "FIFO" in str(err)


# --- special files among the shards (item 14) ---------------------------------------------------


def _replace_shard(make_dataset, tmp_path, kind: str) -> tuple[Path, str]:
    root, m = make_dataset(6, 3)
    name = m.shards[1].name
    shard = root / name
    if kind == "fifo":
        shard.unlink()
        os.mkfifo(shard)
    elif kind == "dev/zero":
        shard.unlink()
        shard.symlink_to("/dev/zero")
    elif kind == "other dataset":
        other = tmp_path / "other"
        other.mkdir()
        (other / name).write_bytes(
            shard.read_bytes()
        )  # the same bytes: only where it lies is wrong
        shard.unlink()
        shard.symlink_to(other / name)
    return root, name


@pytest.mark.parametrize("kind", ["fifo", "dev/zero", "other dataset"])
def test_special_files_named_like_shards_are_refused_on_every_path(make_dataset, tmp_path, kind):
    root, name = _replace_shard(make_dataset, tmp_path, kind)

    def read():
        return sum(
            len(x) for x, _ in LoffLoader(str(root), batch_size=2, num_workers=0, augment=None)
        )

    for fn in (
        read,
        lambda: index_dataset(str(root), force=True),
        lambda: list(StreamingDataset(str(root))),
    ):
        err = _finishes(fn)
        assert isinstance(err, LoffError) and name in str(err), (kind, err)
        assert "\\x00" not in str(err)  # no bytes of what the link points at
    report = _finishes(lambda: verify(str(root), progress=False))
    assert not report.ok and any(name in str(p) for p in report.problems)


def test_a_symlink_inside_the_dataset_is_fine(make_dataset, tmp_path):
    root, m = make_dataset(6, 3)
    name = m.shards[1].name
    (root / "store").mkdir()
    os.replace(root / name, root / "store" / name)
    (root / name).symlink_to(Path("store") / name)
    assert verify(str(root), progress=False).ok


# --- index needs a writable local dataset (item 8) ----------------------------------------------


def test_index_over_http_is_refused_before_any_shard_is_read(make_dataset, http_server, capsys):  # noqa: F811
    root, _ = make_dataset(6, 3)
    os.replace(root, root.parent / "www" / "ds")  # the server serves tmp_path / "www"
    code, _, err = _cli(["index", f"{http_server.url}/ds"], capsys)
    assert code == 1 and "index needs a writable local dataset" in err and "Traceback" not in err
    assert http_server.requests == []


def test_index_of_an_unwritable_manifest_is_a_loff_error(make_dataset, capsys):
    root, _ = make_dataset(6, 3)
    (root / "manifest.json.tmp").mkdir()  # the manifest cannot be replaced (even by root)
    code, _, err = _cli(["index", str(root), "--force"], capsys)
    assert code == 1 and "cannot write the manifest" in err and "Traceback" not in err
