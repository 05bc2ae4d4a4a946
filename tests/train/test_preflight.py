"""Every training and extraction value is checked before any work, through the CLIs
(in-process): one ``error:`` line that names the flag and the fix, no traceback, no output."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from loffdata.extract import command as shard_cli
from loffdata.train import command as train_cli

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings("ignore::loffdata.train.run.FewStepsWarning")


def _code(console, argv: list[str], monkeypatch) -> int:
    monkeypatch.setattr(sys, "argv", ["prog", *argv])
    try:
        console()
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


@pytest.fixture
def cache(make_dataset):
    root, _ = make_dataset(n=12, shard_size=6, shape=(8, 4, 4), classes=3)
    return str(root)


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--model", "deit_b"], "--model 'deit_b': not a classifier kind (did you mean deit_"),
        (["--norm", "layr"], "--norm 'layr': unknown (did you mean layer?)"),
        (["--augment", "{preset: loffta, hflp: 0.5}"], "(did you mean hflp -> hflip?)"),
        (["--augment", "lofta"], "unknown augmentation preset 'lofta'"),
        (["--grid", "7"], "grid: config 7 vs manifest 4"),
        (["--in_chans", "5"], "in_chans: config 5 vs manifest 8"),
        (["--resume"], "--resume: there is no checkpoint at"),
    ],
)
def test_train_values_are_refused_before_any_work(
    cache, tmp_path, capsys, monkeypatch, flags, says
):
    out = tmp_path / "run"
    assert (
        _code(
            train_cli.console,
            ["--train", cache, "--out", str(out), "--progress", "false", *flags],
            monkeypatch,
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("error: --") and says in err and "Traceback" not in err, err
    assert not out.exists()


def test_shards_without_a_manifest_name_the_fix(make_dataset, tmp_path, capsys, monkeypatch):
    root, _ = make_dataset(n=6, shard_size=3)
    (root / "manifest.json").unlink()
    out = tmp_path / "run"
    glob = str(root / "*.tar")
    assert (
        _code(
            train_cli.console,
            ["--train", glob, "--out", str(out), "--progress", "false"],
            monkeypatch,
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "no manifest there, so --in_chans, --grid, --num_classes must be given" in err
    assert f"loffdata index {glob}" in err and not out.exists()


def test_resume_with_changed_settings_is_refused_naming_them(cache, tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "run")
    base = [
        "--train",
        cache,
        "--out",
        out,
        "--model",
        "linear",
        "--epochs",
        "2",
        "--max_steps",
        "1",
        "--progress",
        "false",
        "--batch_size",
        "4",
    ]
    assert _code(train_cli.console, base, monkeypatch) == 0
    said = capsys.readouterr().out
    assert (
        "stopped early at step 1 (--max_steps 1)" in said and "--resume" in said
    )  # even without --progress
    assert _code(train_cli.console, [*base, "--resume", "--lr", "0.5"], monkeypatch) == 2
    err = capsys.readouterr().err
    assert "--resume: cannot resume" in err and "lr: 0.001 -> 0.5" in err and "Traceback" not in err
    assert _code(train_cli.console, [*base, "--resume", "--max_steps", "2"], monkeypatch) == 0


def test_storage_options_take_a_mapping_as_the_help_says(cache, tmp_path, monkeypatch):
    from loffdata.cli import parse as cliutil
    from loffdata.train.trainconfig import TrainConfig

    values = cliutil.parse_command(
        [
            "--train",
            cache,
            "--stream.storage_options",
            "{anon: true, client_kwargs: {endpoint_url: 'http://127.0.0.1:9'}}",
        ],
        train_cli.OPTIONS,
        prog="t",
        doc="",
    )
    config = cliutil.build(TrainConfig, values)
    assert config.stream.storage_options == {
        "anon": True,
        "client_kwargs": {"endpoint_url": "http://127.0.0.1:9"},
    }
    with pytest.raises(cliutil.CliError, match="--stream.storage_options: expected mapping"):
        cliutil.parse_command(
            ["--train", cache, "--stream.storage_options", "anon"],
            train_cli.OPTIONS,
            prog="t",
            doc="",
        )


def test_shard_model_name_is_checked_against_timm(tmp_path, capsys, monkeypatch):
    pytest.importorskip("timm")
    out = tmp_path / "feats"
    assert (
        _code(shard_cli.console, ["--model", "vit_tiny_patch16", "--out", str(out)], monkeypatch)
        == 2
    )
    err = capsys.readouterr().err
    assert "--model 'vit_tiny_patch16': not a model of the installed timm" in err
    assert "did you mean" in err and "vit_tiny_patch16_224" in err and not out.exists()
    shard_cli.check_model("vit_tiny_patch16_224.augreg_in21k")  # a pretrained tag is fine
    shard_cli.check_model("hf-hub:org/repo")


def test_console_scripts_are_the_repo_scripts():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["loffdata-shard"] == "loffdata.extract.command:console"
    assert scripts["loffdata-train"] == "loffdata.train.command:console"
    for script, module in (
        ("tools/shard.py", "loffdata.extract.command"),
        ("recipes/train.py", "loffdata.train.command"),
    ):
        text = (ROOT / script).read_text()
        assert f"from {module} import console" in text and len(text.splitlines()) <= 12  # a shim
