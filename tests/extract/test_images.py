"""Image sources: folders, CSV, WebDataset, the embedded shapes dataset, decoding errors."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from loffdata.errors import LoffError
from loffdata.extract.images import (
    SHAPES_CLASSES,
    BadImageError,
    csv_source,
    folder_source,
    iter_wds_images,
    load_image,
    make_key,
    open_source,
    render_shape,
    shapes_source,
    wds_source,
)
from loffdata.format.sample import check_key


def write_png(path: Path, colour=(200, 30, 30), size=40) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)
    return path


def make_folder(root: Path, splits=("train", "val"), classes=("cat", "dog"), per_class=3) -> Path:
    for s in splits:
        for c in classes:
            for i in range(per_class):
                write_png((root / s if s else root) / c / f"img {i}.png")
    return root


def make_wds(path: Path, n: int, *, bad: int | None = None) -> Path:
    with tarfile.open(path, "w") as tar:
        for i in range(n):
            buf = io.BytesIO()
            Image.new("RGB", (24, 24), (i * 20 % 255, 0, 0)).save(buf, format="PNG")
            data = b"garbage" if i == bad else buf.getvalue()
            for name, payload in ((f"s{i:04d}.png", data), (f"s{i:04d}.cls", str(i % 3).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return path


def test_folder_with_splits_shares_classes(tmp_path):
    root = make_folder(tmp_path / "data")
    write_png(tmp_path / "data" / "val" / "emu" / "a.png")  # class only in val
    src = folder_source(str(root))
    assert sorted(src.splits) == ["train", "val"]
    assert src.classes == ["cat", "dog", "emu"]
    assert [r.label for r in src.splits["train"]] == [0, 0, 0, 1, 1, 1]
    assert src.splits["val"][-1].label == 2
    assert all(check_key(r.key) for s in src.splits.values() for r in s)


def test_folder_empty_split_dropped(tmp_path):
    root = make_folder(tmp_path / "d", splits=("train",))
    (root / "test").mkdir()
    assert list(folder_source(str(root)).splits) == ["train"]


def test_folder_without_splits_is_train(tmp_path):
    src = folder_source(str(make_folder(tmp_path / "d", splits=("",))))
    assert list(src.splits) == ["train"] and len(src.splits["train"]) == 6


def test_folder_missing_raises(tmp_path):
    with pytest.raises(LoffError, match="does not exist"):
        folder_source(str(tmp_path / "nope"))


def test_csv_source_string_labels_and_splits(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        write_png(tmp_path / "img" / name)
    (tmp_path / "list.csv").write_text(
        "path,label,split\nimg/a.png,zebra,train\nimg/b.png,ant,train\nimg/c.png,zebra,val\n"
    )
    src = csv_source(str(tmp_path / "list.csv"))
    assert src.classes == ["ant", "zebra"]
    assert [r.label for r in src.splits["train"]] == [1, 0]
    assert load_image(src.splits["val"][0].path).size == (40, 40)


def test_csv_int_labels_and_errors(tmp_path):
    (tmp_path / "a.csv").write_text("path,label\nx.png,3\ny.png,1\n")
    src = csv_source(str(tmp_path / "a.csv"))
    assert src.classes is None and [r.label for r in src.splits["train"]] == [3, 1]
    (tmp_path / "b.csv").write_text("file,cls\nx.png,3\n")
    with pytest.raises(LoffError, match="header"):
        csv_source(str(tmp_path / "b.csv"))
    (tmp_path / "c.csv").write_text("path,label,split\nx.png,3,holdout\n")
    with pytest.raises(LoffError, match="holdout"):
        csv_source(str(tmp_path / "c.csv"))


def test_wds_source_lists_and_streams(tmp_path):
    url = str(make_wds(tmp_path / "w-000000.tar", 5))
    src = wds_source(url)
    assert [r.label for r in src.splits["train"]] == [0, 1, 2, 0, 1]
    items = list(iter_wds_images(src.wds_urls["train"]))
    assert [i for i, _, _ in items] == list(range(5))
    assert items[2][1].endswith("#s0002") and items[2][2][:4] == b"\x89PNG"


def test_wds_refuses_pipe():
    with pytest.raises(LoffError, match="pipe"):
        wds_source("pipe:cat x.tar")


def test_shapes_deterministic_and_varied():
    a = np.asarray(render_shape(3, seed=0, split="train", index=7))
    b = np.asarray(render_shape(3, seed=0, split="train", index=7))
    c = np.asarray(render_shape(3, seed=0, split="val", index=7))
    assert np.array_equal(a, b) and not np.array_equal(a[:8, :8], c[:8, :8])
    sizes = {render_shape(i % 10, seed=0, split="train", index=i).size[0] for i in range(30)}
    assert min(sizes) >= 64 and max(sizes) <= 256 and len(sizes) > 5


def test_shapes_source_counts_and_labels():
    src = shapes_source(train=25, val=5)
    assert {s: len(r) for s, r in src.splits.items()} == {"train": 25, "val": 5}
    assert src.classes == list(SHAPES_CLASSES)
    rec = src.splits["train"][13]
    assert rec.label == 3 and load_image(rec.path).mode == "RGB"
    assert open_source(None, shapes_counts={"val": 4}).splits.keys() == {"val"}


def test_bad_image_names_path(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(BadImageError, match="bad.jpg"):
        load_image(str(bad))
    with pytest.raises(BadImageError, match="missing.png"):
        load_image(str(tmp_path / "missing.png"))


def test_make_key_sanitizes():
    assert make_key(5, "/x/my photo (1).JPG") == "00000005_my_photo_1"
    assert check_key(make_key(1, "/x/" + "é" * 200 + ".png"))


def test_guess_kind(tmp_path):
    make_folder(tmp_path / "f", splits=("",))
    assert open_source(str(tmp_path / "f")).kind == "folder"
    assert open_source(str(make_wds(tmp_path / "w.tar", 2))).kind == "wds"
