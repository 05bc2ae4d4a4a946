"""loffdata show: a PNG of a few samples of a cache and their augmented views."""

from __future__ import annotations

import pytest
import torch

from loffdata.cli.main import main
from loffdata.cli.show import pca_basis, to_rgb

pytest.importorskip("matplotlib")


def test_show_writes_a_png_of_samples_and_views(make_dataset, tmp_path, capsys):
    root, _ = make_dataset(n=10, shard_size=4, shape=(16, 6, 6), classes=3)
    out = tmp_path / "views.png"
    main(["show", str(root), "--out", str(out), "--samples", "3", "--views", "2", "--preset", "loffta"])
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
    assert (to_rgb(x[0].flip(-1), *basis) == rgb[:, ::-1]).all()  # same projection: a flip stays a flip


def test_show_needs_a_dataset(tmp_path):
    with pytest.raises(SystemExit) as err:
        main(["show", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.png")])
    assert err.value.code == 1 and not (tmp_path / "x.png").exists()
