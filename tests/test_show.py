"""loffdata show: a PNG of a few samples of a cache and their augmented views."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from loffdata.cli.main import main
from loffdata.cli.show import pca_basis, to_rgb

pytest.importorskip("matplotlib")


def test_show_writes_a_png_of_samples_and_views(make_dataset, tmp_path, capsys):
    root, _ = make_dataset(n=10, shard_size=4, shape=(16, 6, 6), classes=3)
    out = tmp_path / "views.png"
    main(
        [
            "show",
            str(root),
            "--out",
            str(out),
            "--samples",
            "3",
            "--views",
            "2",
            "--preset",
            "loffta",
        ]
    )
    assert f"wrote {out}" in capsys.readouterr().out
    from PIL import Image

    with Image.open(out) as img:
        width, height = img.size
    assert img.format == "PNG" and width > 300 and height > 300  # 3 rows x (1 original + 2 views)


def test_pca_colours_are_shared_and_in_range():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 12, 5, 5, generator=g)
    basis = pca_basis(x)
    rgb = to_rgb(x[0], *basis)
    assert rgb.shape == (5, 5, 3) and rgb.min() >= 0 and rgb.max() <= 1
    assert (
        to_rgb(x[0].flip(-1), *basis) == rgb[:, ::-1]
    ).all()  # same projection: a flip stays a flip


def test_show_needs_a_dataset(tmp_path):
    with pytest.raises(SystemExit) as err:
        main(["show", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.png")])
    assert err.value.code == 1 and not (tmp_path / "x.png").exists()


def _exit_code(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--samples", "0"], "--samples must be at least 1, got 0"),
        (["--views", "-1"], "--views must be at least 1"),
        (["--preset", "lofta"], "--preset 'lofta': unknown (did you mean loffta?)"),
        (["--pick", "per_class"], "--pick 'per_class': expected one of first, random, per-class"),
    ],
)
def test_show_refuses_bad_values_before_reading(tmp_path, capsys, flags, says):
    out = tmp_path / "x.png"  # the dataset does not even exist: the values are checked first
    assert _exit_code(["show", str(tmp_path / "nothing"), "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err and not out.exists()


def test_show_refuses_a_missing_out_directory(make_dataset, tmp_path, capsys):
    root, _ = make_dataset(n=6, shard_size=3)
    assert _exit_code(["show", str(root), "--out", str(tmp_path / "no" / "such" / "x.png")]) == 2
    assert "does not exist; create it first" in capsys.readouterr().err


def test_pick_indices():
    from loffdata.cli.show import pick_indices

    labels = np.array([0, 0, 0, 1, 1, 2, 0, 2])
    assert pick_indices(labels, 3, "first", 0) == [0, 1, 2]
    assert pick_indices(labels, 5, "per-class", 0) == [0, 3, 5, 1, 4]
    picked = pick_indices(labels, 4, "random", 7)
    assert (
        len(set(picked)) == 4
        and picked == pick_indices(labels, 4, "random", 7)
        and picked != [0, 1, 2, 3]
    )
    assert pick_indices(labels, 99, "per-class", 0) == [0, 3, 5, 1, 4, 7, 2, 6]  # every sample once


def test_show_pick_per_class_draws_one_of_each_class(tmp_path, capsys, monkeypatch):
    import loffdata.cli.show as show_module
    from loffdata.format.writer import WriterConfig, write_dataset

    labels = [0] * 5 + [1] * 4 + [2] * 3  # the first 3 samples are all of class 0
    rng = np.random.default_rng(0)
    root = tmp_path / "sorted"
    write_dataset(
        str(root),
        [
            (f"s{i:03d}", rng.standard_normal((8, 4, 4)).astype(np.float32), y)
            for i, y in enumerate(labels)
        ],
        config=WriterConfig(max_samples=5),
        classes=["a", "b", "c"],
    )
    drawn = {}
    real = show_module._picked_batch

    def spy(*args, **kwargs):
        drawn["batch"] = real(*args, **kwargs)
        return drawn["batch"]

    monkeypatch.setattr(show_module, "_picked_batch", spy)
    assert (
        _exit_code(
            [
                "show",
                str(root),
                "--out",
                str(tmp_path / "v.png"),
                "--samples",
                "3",
                "--views",
                "1",
                "--pick",
                "per-class",
            ]
        )
        == 0
    )
    assert sorted(drawn["batch"][1].tolist()) == [0, 1, 2] and (tmp_path / "v.png").exists()


def test_show_picks_match_the_library():
    from loffdata.cli.show import PICKS

    assert f"expected one of {', '.join(PICKS)}" in _pick_error()


def _pick_error() -> str:
    from loffdata.cli.main import _check_show_values
    from loffdata.cli.values import CliError

    with pytest.raises(CliError) as err:
        _check_show_values(out="x.png", preset="none", samples=1, views=1, pick="?")
    return str(err.value)
