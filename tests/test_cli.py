"""Every CLI checks its flags, values and config file before any work, and explains itself.

tools/shard.py, recipes/train.py and the ``loffdata`` command run in-process through their
``main(argv)`` (tests/inproc.py: exit status, stdout, stderr and tracebacks as a subprocess
shows them); each also runs once as the user runs it, a subprocess
(``test_each_command_line_runs_as_a_subprocess``). The shared layer (loffdata.cli.parse) is
also tested directly.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml

from loffdata.cli import parse as cliutil
from loffdata.extract.extractconfig import ExtractConfig
from loffdata.train.trainconfig import STREAM_FROM_RUN
from loffdata.train.trainer import TrainConfig
from tests.inproc import run_cli

ROOT = Path(__file__).resolve().parents[1]
SHARD = str(ROOT / "tools" / "shard.py")
TRAIN = str(ROOT / "recipes" / "train.py")
CLIS = {"shard": [SHARD], "train": [TRAIN], "loffdata": ["loffdata"]}
#: the command lines as a user types them, each run once as a subprocess
PROCESSES = {
    "shard": [sys.executable, SHARD],
    "train": [sys.executable, TRAIN],
    "loffdata": [sys.executable, "-m", "loffdata"],
}


def run(command: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``command args`` in-process (``command``: "loffdata" or a script's path)."""
    return run_cli(command, *args, cwd=cwd)


@pytest.mark.parametrize(
    ("cli", "args", "wanted"),
    [
        ("shard", ["--img_sz", "64"], "unknown flag --img_sz (did you mean --img_size?)"),
        ("train", ["--epoch", "3"], "unknown flag --epoch (did you mean --epochs?)"),
        ("loffdata", ["inspct", "some/dir"], "unknown command 'inspct' (did you mean inspect?)"),
    ],
)
@pytest.mark.slow
def test_each_command_line_runs_as_a_subprocess(cli, args, wanted, tmp_path):
    """The one real interpreter launch per command line: its entry point, exit status, stderr."""
    proc = subprocess.run(
        [*PROCESSES[cli], *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
        },
    )
    assert proc.returncode == 2 and wanted in proc.stderr and "Traceback" not in proc.stderr, (
        proc.stderr
    )
    assert proc.stdout == "" and not list(tmp_path.iterdir())
    assert run(CLIS[cli][0], *args, cwd=tmp_path).stderr == proc.stderr  # in-process: the same


def _fields(cls) -> list[str]:
    """Flag names of a config: its fields, nested config dataclasses as dotted names (less
    the stream fields a training run sets from its own)."""
    hints = typing.get_type_hints(cls)
    names = []
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        names += (
            [f"{f.name}.{n}" for n in _fields(kind)] if dataclasses.is_dataclass(kind) else [f.name]
        )
    if cls is TrainConfig:
        names = [n for n in names if n not in {f"stream.{k}" for k in STREAM_FROM_RUN}]
    return names


def test_train_cli_has_no_stream_options_the_run_overrides(tmp_path):
    help_text = run(*CLIS["train"], "--help", cwd=tmp_path).stdout
    assert (
        "--seed " in help_text
        and "--stream.seed" not in help_text
        and "--stream.batch_size" not in help_text
    )
    proc = run(*CLIS["train"], "--train", str(tmp_path), "--stream.batch_size", "8", cwd=tmp_path)
    assert proc.returncode != 0 and "unknown flag --stream.batch_size" in proc.stderr


@pytest.mark.parametrize("flag", ["--help", "-h"])
@pytest.mark.parametrize(("cli", "cls"), [("shard", ExtractConfig), ("train", TrainConfig)])
def test_help_lists_every_field_with_default_and_doc(cli, cls, flag, tmp_path):
    proc = run(*CLIS[cli], flag, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for name in _fields(cls):
        assert f"--{name} " in proc.stdout, name
    assert proc.stdout.count("(default: ") == len(_fields(cls))
    assert "(undocumented)" not in proc.stdout and "--config FILE" in proc.stdout
    assert not list(tmp_path.iterdir())  # no work, no output


def test_loffdata_help_lists_commands_and_their_flags(tmp_path):
    top = run(*CLIS["loffdata"], "--help", cwd=tmp_path)
    assert top.returncode == 0 and all(c in top.stdout for c in ("inspect", "verify", "show"))
    sub = run(*CLIS["loffdata"], "verify", "-h", cwd=tmp_path)
    assert (
        sub.returncode == 0
        and "--quiet [true|false]  (default: false)" in sub.stdout
        and "PATH" in sub.stdout
    )


@pytest.mark.parametrize(
    ("cli", "args", "wanted"),
    [
        ("shard", ["--img_sz", "64"], "unknown flag --img_sz (did you mean --img_size?)"),
        ("train", ["--epoch", "3"], "unknown flag --epoch (did you mean --epochs?)"),
        (
            "loffdata",
            ["verify", "some/dir", "--quite"],
            "unknown flag --quite (did you mean --quiet?)",
        ),
        ("loffdata", ["inspct", "some/dir"], "unknown command 'inspct' (did you mean inspect?)"),
    ],
)
def test_typo_is_refused_before_any_work(cli, args, wanted, tmp_path):
    proc = run(*CLIS[cli], *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert wanted in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.iterdir())  # nothing extracted, nothing trained


def test_bad_values_are_blamed_on_the_flag(tmp_path):
    proc = run(*CLIS["shard"], "--img_size", "abc", cwd=tmp_path)
    assert proc.returncode == 2 and "--img_size: expected int or null, got 'abc'" in proc.stderr
    proc = run(*CLIS["shard"], "--dtype", "float8", cwd=tmp_path)
    assert proc.returncode == 2 and "--dtype must be one of" in proc.stderr
    proc = run(*CLIS["shard"], "--input", "no/such/images", cwd=tmp_path)
    assert proc.returncode == 1 and "--input no/such/images: no such file" in proc.stderr
    assert "Traceback" not in proc.stderr and not list(tmp_path.iterdir())


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_config_file_errors_name_the_file_and_key(suffix, tmp_path):
    cfg = tmp_path / f"c{suffix}"
    cfg.write_text(json.dumps({"epochs": 2, "img_sz": 3}))  # JSON is valid YAML too
    proc = run(*CLIS["train"], "--config", str(cfg), cwd=tmp_path)
    assert (
        proc.returncode == 2
        and f"{cfg}: unknown key 'img_sz' (did you mean img_size?)" in proc.stderr
    )
    cfg.write_text(json.dumps({"epochs": "many"}))
    proc = run(*CLIS["train"], "--config", str(cfg), cwd=tmp_path)
    assert proc.returncode == 2 and f"{cfg}: key 'epochs': expected int" in proc.stderr
    cfg.write_text("{epochs: 2,, }" if suffix == ".yaml" else '{"epochs": 2,}')
    proc = run(*CLIS["shard"], "--config", str(cfg), cwd=tmp_path)
    assert (
        proc.returncode == 2
        and f"{cfg}: not valid {suffix[1:].upper()}" in proc.stderr
        and "line 1" in proc.stderr
    )


def test_wrong_flag_with_a_good_config_is_blamed_on_the_flag(tmp_path):
    proc = run(
        *CLIS["train"],
        "--config",
        str(ROOT / "recipes/configs/demo.yaml"),
        "--lrate",
        "0.1",
        cwd=tmp_path,
    )
    assert (
        proc.returncode == 2
        and "unknown flag --lrate" in proc.stderr
        and "demo.yaml" not in proc.stderr
    )


def test_yaml_and_json_configs_resolve_the_same(tmp_path):
    values = {
        "model": "test_resnet",
        "img_size": 64,
        "shapes_counts": {"train": 3},
        "model_kwargs": {},
        "crop_pct": 1.0,
        "amp": False,
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(values))
    (tmp_path / "c.json").write_text(json.dumps(values))
    options = cliutil.options_from_dataclass(ExtractConfig)
    got = [
        cliutil.parse_command(
            ["--config", str(tmp_path / f"c.{ext}"), "--workers", "0"], options, prog="t", doc=""
        )
        for ext in ("yaml", "json")
    ]
    assert got[0] == got[1]
    config = cliutil.build(ExtractConfig, got[0])
    assert (config.model, config.img_size, config.shapes_counts, config.workers) == (
        "test_resnet",
        64,
        {"train": 3},
        0,
    )


def test_flags_win_over_the_config_file_and_values_are_typed(tmp_path):
    (tmp_path / "c.yaml").write_text("epochs: 7\nlr: 1e-3\ntrain: a\n")
    options = cliutil.options_from_dataclass(TrainConfig)
    values = cliutil.parse_command(
        [
            "--config",
            str(tmp_path / "c.yaml"),
            "--epochs=3",
            "--max_steps",
            "None",
            "--resume",
            "--augment",
            "{preset: loffta, hflip: 0.0}",
        ],
        options,
        prog="t",
        doc="",
    )
    config = cliutil.build(TrainConfig, values)
    assert (config.epochs, config.lr, config.max_steps, config.resume) == (3, 1e-3, None, True)
    assert config.augment == {"preset": "loffta", "hflip": 0.0}
    assert (
        cliutil.parse_command(["--noresume", "--train", "x"], options, prog="t", doc="")["resume"]
        is False
    )


def test_untyped_options_keep_config_file_values(tmp_path):
    (tmp_path / "c.yaml").write_text("train: a\naugment: loffta\n")
    (tmp_path / "e.json").write_text(
        json.dumps({"input": "data/images", "storage_options": {"anon": True}})
    )
    train = cliutil.parse_command(
        ["--config", str(tmp_path / "c.yaml")],
        cliutil.options_from_dataclass(TrainConfig),
        prog="t",
        doc="",
    )
    assert train["augment"] == "loffta"
    extract = cliutil.parse_command(
        ["--config", str(tmp_path / "e.json")],
        cliutil.options_from_dataclass(ExtractConfig),
        prog="t",
        doc="",
    )
    assert extract["input"] == "data/images" and extract["storage_options"] == {"anon": True}


def test_docstring_sections_give_every_option_a_doc():
    for cls in (ExtractConfig, TrainConfig):
        undocumented = [o.name for o in cliutil.options_from_dataclass(cls) if not o.doc]
        assert undocumented == [], cls.__name__


def test_train_config_loader_names_the_file(tmp_path):
    from loffdata.train.trainer import load_config

    (tmp_path / "c.json").write_text(json.dumps({"train": "x", "epoch": 3}))
    with pytest.raises(
        ValueError, match=r"c\.json: unknown config key 'epoch' \(did you mean epochs\?\)"
    ):
        load_config(tmp_path / "c.json")
    assert load_config(ROOT / "recipes/configs/demo.yaml", epochs=1).epochs == 1
