"""Output locations (issue 22, items 2 and 3): an output never lands inside its own input,
and a shard prefix is a plain file stem, for ``loffdata convert``, ``tools/shard.py`` and
the writer they share."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from loffdata.cli.main import main as cli_main
from loffdata.cli.parse import run
from loffdata.errors import LocationError
from loffdata.extract.extractconfig import ExtractConfig
from loffdata.format.writer import WriterConfig
from loffdata.ops.convert import ConvertConfig, convert
from tests.conftest import load_script

ROOT = Path(__file__).resolve().parents[1]


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _cli(argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_:
        cli_main(argv)
    return exit_.value.code, capsys.readouterr().err


@pytest.mark.parametrize("dst", ["{src}", "{src}/", "{src}/./", "{src}/sub", "{src}/sub/../"])
def test_convert_refuses_an_output_inside_its_source(make_dataset, capsys, dst):
    src, _ = make_dataset(6, 3)
    before = _digest(src)
    code, err = _cli(["convert", str(src), dst.format(src=src), "--pool", "2", "--quiet"], capsys)
    assert (
        code == 1
        and "error:" in err
        and "overwrite its own source" in err
        and "Traceback" not in err
    )
    assert _digest(src) == before


def test_convert_refuses_a_source_inside_its_output_when_overwriting(make_dataset, tmp_path):
    src, _ = make_dataset(6, 3)
    with pytest.raises(LocationError, match="inside the output"):
        convert(str(src), str(src.parent), ConvertConfig(pool=2), overwrite=True, progress=False)


def test_convert_through_a_symlink_to_its_source_is_refused(make_dataset, tmp_path):
    src, _ = make_dataset(6, 3)
    (tmp_path / "alias").symlink_to(src)
    with pytest.raises(LocationError, match="overwrite its own source"):
        convert(str(src), str(tmp_path / "alias"), ConvertConfig(pool=2), progress=False)


@pytest.mark.parametrize(
    "prefix", ["./../escaped", "../x", "a/b", "a\\b", ".hidden", "x%2f..", "", ".."]
)
def test_convert_refuses_a_prefix_that_is_not_a_plain_stem(make_dataset, tmp_path, capsys, prefix):
    src, _ = make_dataset(6, 3)
    code, err = _cli(
        ["convert", str(src), str(tmp_path / "out"), "--prefix", prefix, "--quiet"], capsys
    )
    assert code in (1, 2) and "plain file stem" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("*escaped*"))


@pytest.mark.parametrize("prefix", ["./../escaped", "a/b", ".x"])
def test_writer_and_extract_configs_refuse_the_prefix(tmp_path, prefix):
    for make in (
        lambda: WriterConfig(prefix=prefix),
        lambda: ConvertConfig(prefix=prefix),
        lambda: ExtractConfig(out=str(tmp_path / "o"), prefix=prefix),
    ):
        with pytest.raises(LocationError, match="plain file stem"):
            make()


def test_extract_refuses_an_output_inside_its_input(tmp_path):
    images = tmp_path / "images"
    (images / "cat").mkdir(parents=True)
    with pytest.raises(LocationError, match="overwrite its own source"):
        ExtractConfig(input=str(images), out=str(images / "feats"))
    ExtractConfig(input=str(images), out=str(tmp_path / "feats"))  # beside it is fine


def test_tools_shard_cli_refuses_prefix_and_location_in_one_line(tmp_path, capsys):
    shard = load_script(ROOT / "tools" / "shard.py", "shard_cli_locations")
    images = tmp_path / "images"
    (images / "cat").mkdir(parents=True)
    cases = [
        ["--out", str(tmp_path / "o"), "--prefix", "./../escaped"],
        ["--input", str(images), "--out", str(images / "o")],
    ]
    for argv in cases:
        with pytest.raises(SystemExit) as exit_:
            run(lambda argv=argv: shard.main(argv))
        err = capsys.readouterr().err
        assert (
            exit_.value.code == 2
            and err.startswith("error:")
            and len(err.strip().splitlines()) == 1
        ), err
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "o").exists()
