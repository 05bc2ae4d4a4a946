"""Feature extraction: stored features equal a direct forward pass; pooling, dtypes,
bad input, resume, configuration checks, WebDataset input."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from loffdata.errors import LoffError
from loffdata.extract.images import folder_source, load_image
from loffdata.extract.pipeline import (
    CONFIG_NAME,
    ExtractConfig,
    RandomWeightsWarning,
    build_model,
    build_transform,
    compute_features,
    extract,
    plan_shards,
)
from loffdata.format.manifest import Manifest
from tests.extract.test_images import make_folder, make_wds, write_png
from tests.readback import as_float, read_split

VIT = {"model": "test_vit", "img_size": 64}  # 4x4 grid of 64 channels
CNN = {"model": "test_resnet", "img_size": 64}  # 2x2 grid of 96 channels


@pytest.fixture
def checkpoint(tmp_path):
    """Saves random weights so that the test and the extraction use the same model."""

    def save(model_name: str) -> str:
        path = tmp_path / f"{model_name}.pth"
        torch.save(timm.create_model(model_name).state_dict(), path)
        return str(path)

    return save


def run(tmp_path, **kw) -> dict[str, Manifest]:
    kw.setdefault("out", str(tmp_path / "out"))
    kw.setdefault("workers", 0)
    kw.setdefault("progress", False)
    kw.setdefault("batch_size", 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        return extract(ExtractConfig(**kw))


def direct(cfg: ExtractConfig, paths: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The reference: the model's own forward pass on the same preprocessed images."""
    model = build_model(cfg)
    transform, _ = build_transform(model, cfg)
    x = torch.stack([transform(load_image(p)) for p in paths])
    with torch.inference_mode():
        final, inter = model.forward_intermediates(
            x, indices=[cfg.layer], norm=cfg.norm, output_fmt="NCHW"
        )
        feats = torch.nn.functional.avg_pool2d(inter[0], cfg.pool) if cfg.pool > 1 else inter[0]
        return feats, model.forward_head(final, pre_logits=True)


def test_compute_features_matches_forward_intermediates():
    model = timm.create_model("test_vit", img_size=64).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        feat, vec = compute_features(model, x, layer=1, norm=True, pooled=True, pool=2)
        ref = model.forward_intermediates(x, indices=[1], norm=True, intermediates_only=True)[0]
        cls = model.forward_head(model.forward_features(x), pre_logits=True)
    assert feat.shape == (2, 64, 2, 2) and torch.allclose(
        feat, torch.nn.functional.avg_pool2d(ref, 2)
    )
    assert torch.allclose(vec, cls, atol=1e-6)


@pytest.mark.parametrize("arch", [VIT, CNN], ids=["vit", "cnn"])
def test_features_equal_direct_forward(tmp_path, checkpoint, arch):
    data = make_folder(tmp_path / "img", splits=("",), per_class=3)
    for k, p in enumerate(sorted(data.rglob("*.png"))):
        write_png(p, colour=(k * 40 % 255, 90, 200 - k * 20), size=40 + 7 * k)
    cfg = dict(
        arch, input=str(data), checkpoint=checkpoint(arch["model"]), dtype="float32", pooled=True
    )
    manifests = run(tmp_path, **cfg)
    manifest, samples = read_split(tmp_path / "out" / "train")
    feats, vec = direct(
        ExtractConfig(**cfg), [r.path for r in folder_source(str(data)).splits["train"]]
    )
    assert manifests["train"].num_samples == 6 == len(samples)
    assert (
        manifest.features.shape == tuple(feats.shape[1:]) and manifest.features.dtype == "float32"
    )
    stored = np.stack([as_float(s.features) for s in samples])
    np.testing.assert_allclose(stored, feats.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        np.stack([s.extras["pooled"] for s in samples]), vec.numpy(), rtol=1e-5, atol=1e-5
    )
    assert [s.label for s in samples] == [0, 0, 0, 1, 1, 1] and manifest.classes == ["cat", "dog"]
    np.testing.assert_allclose(
        manifest.stats.mean, stored.mean(axis=(0, 2, 3)), rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("dtype,tol", [("float16", 2e-3), ("bfloat16", 1e-2), ("int8", 1e-2)])
def test_storage_dtypes(tmp_path, checkpoint, dtype, tol):
    data = make_folder(tmp_path / "img", splits=("",), per_class=2)
    cfg = dict(VIT, input=str(data), checkpoint=checkpoint("test_vit"), dtype=dtype, pooled=True)
    run(tmp_path, **cfg)
    manifest, samples = read_split(tmp_path / "out" / "train")
    feats, _ = direct(
        ExtractConfig(**cfg), [r.path for r in folder_source(str(data)).splits["train"]]
    )
    assert manifest.features.dtype == dtype
    assert manifest.extras["pooled"].dtype == ("float32" if dtype == "int8" else dtype)
    stored = np.stack([as_float(s.features) for s in samples])
    scale = np.abs(feats.numpy()).max()
    np.testing.assert_allclose(stored / scale, feats.numpy() / scale, atol=tol)


def test_pool_and_layer(tmp_path, checkpoint):
    data = make_folder(tmp_path / "img", splits=("",), per_class=1)
    cfg = dict(
        model="test_vit",
        img_size=128,
        input=str(data),
        checkpoint=checkpoint("test_vit"),
        pool=2,
        layer=0,
        dtype="float32",
    )
    run(tmp_path, **cfg)
    manifest, samples = read_split(tmp_path / "out" / "train")
    assert manifest.features.shape == (64, 4, 4)  # 8x8 grid pooled by 2
    feats, _ = direct(
        ExtractConfig(**cfg), [r.path for r in folder_source(str(data)).splits["train"]]
    )
    np.testing.assert_allclose(
        np.stack([as_float(s.features) for s in samples]), feats.numpy(), atol=1e-5
    )
    assert (
        manifest.source["layer"] == 0
        and manifest.source["pool"] == 2
        and manifest.source["img_size"] == 128
    )


def test_splits_written_separately(tmp_path):
    data = make_folder(tmp_path / "img", splits=("train", "val", "test"), per_class=2)
    (data / "test" / "empty_class").mkdir()
    manifests = run(tmp_path, **CNN, input=str(data), shard_size=3)
    assert {s: m.num_samples for s, m in manifests.items()} == {"train": 4, "val": 4, "test": 4}
    for split in ("train", "val", "test"):
        m = Manifest.load(str(tmp_path / "out" / split))
        assert m.classes == ["cat", "dog"] and len(m.shards) == 2 and m.source["split"] == split
    record = json.loads((tmp_path / "out" / CONFIG_NAME).read_text())
    assert record["config"]["model"] == "test_resnet" and record["splits"]["val"] == 4


def corrupt_folder(tmp_path: Path) -> tuple[Path, Path]:
    data = make_folder(tmp_path / "img", splits=("",), per_class=3)
    bad = data / "dog" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return data, bad


def test_corrupt_image_stops_with_its_path(tmp_path):
    data, bad = corrupt_folder(tmp_path)
    with pytest.raises(LoffError, match="broken.jpg.*skip_bad"):
        run(tmp_path, **CNN, input=str(data))


def test_corrupt_image_skipped_and_recorded(tmp_path):
    data, bad = corrupt_folder(tmp_path)
    manifests = run(tmp_path, **CNN, input=str(data), skip_bad=True, shard_size=4)
    m = manifests["train"]
    assert m.num_samples == 6 and [s["path"] for s in m.skipped] == [str(bad)]
    assert "reason" in m.skipped[0]
    _, samples = read_split(tmp_path / "out" / "train")
    assert len(samples) == 6 and len({s.key for s in samples}) == 6


def test_resume_after_crash_no_duplicates_no_gaps(tmp_path):
    cfg = dict(CNN, shapes_counts={"train": 20}, shard_size=3, batch_size=2)

    def crash(split, j):
        if j == 2:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        _run_with_hook(tmp_path, cfg, crash)
    out = tmp_path / "out" / "train"
    assert not (out / "manifest.json").exists() and len(list(out.glob("shard-*.json"))) == 3
    written = []
    manifests = _run_with_hook(tmp_path, cfg, lambda split, j: written.append(j))
    assert written == [3, 4, 5, 6]  # only the incomplete shards were redone
    manifest, samples = read_split(out)
    assert manifest.num_samples == 20 and len(manifest.shards) == 7
    assert [s.key for s in samples] == [f"{i:08d}" for i in range(20)]
    assert [s.label for s in samples] == [i % 10 for i in range(20)]
    assert manifests["train"].stats.count == 20 * 4


def _run_with_hook(tmp_path, cfg, hook):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        return extract(
            ExtractConfig(out=str(tmp_path / "out"), workers=0, progress=False, **cfg),
            on_shard=hook,
        )


def test_resume_refuses_other_config(tmp_path):
    run(tmp_path, **CNN, shapes_counts={"train": 4})
    with pytest.raises(LoffError, match="different configuration.*pool"):
        run(tmp_path, **CNN, shapes_counts={"train": 4}, pool=2)
    manifests = run(
        tmp_path, **dict(CNN, img_size=128), shapes_counts={"train": 4}, pool=2, overwrite=True
    )
    assert manifests["train"].features.shape == (96, 2, 2)


def test_rerun_complete_is_noop(tmp_path):
    run(tmp_path, **CNN, shapes_counts={"train": 5}, shard_size=2)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out" / "train").glob("*.tar")}
    manifests = run(tmp_path, **CNN, shapes_counts={"train": 5}, shard_size=2)
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out" / "train").glob("*.tar")}
    assert before == after and manifests["train"].num_samples == 5


def test_wds_input_with_workers(tmp_path):
    url = str(make_wds(tmp_path / "w-000000.tar", 9, bad=4))
    manifests = run(tmp_path, **CNN, input=url, workers=2, shard_size=4, skip_bad=True)
    m = manifests["train"]
    assert m.num_samples == 8 and m.skipped[0]["path"].endswith("#s0004")
    _, samples = read_split(tmp_path / "out" / "train")
    assert [s.label for s in samples] == [0, 1, 2, 0, 2, 0, 1, 2]
    assert m.classes == ["0", "1", "2"]  # integer labels: their values name the classes


def test_wds_input_takes_class_names(tmp_path):
    from loffdata.errors import LoffError

    url = str(make_wds(tmp_path / "w-000000.tar", 4))
    (tmp_path / "names.txt").write_text("red\ngreen\nblue\n")
    m = run(tmp_path, **CNN, input=url, classes=str(tmp_path / "names.txt"))["train"]
    assert m.classes == ["red", "green", "blue"]
    with pytest.raises(LoffError, match=r"--classes: labels \[2\] lie outside the 2 class names"):
        run(tmp_path, **CNN, input=url, classes="red,green", out=str(tmp_path / "out2"))


def test_random_weights_warning_and_bad_config(tmp_path):
    with pytest.warns(RandomWeightsWarning, match="RANDOM"):
        build_model(ExtractConfig(**CNN))
    with pytest.raises(ValueError, match="dtype"):
        ExtractConfig(dtype="float8")
    with pytest.raises(ValueError, match="pool"):
        ExtractConfig(pool=0)


def test_plan_shards_covers_each_index_once():
    plans = [plan_shards(23, 5, rank=r, world_size=3) for r in range(3)]
    indices = sorted(i for p in plans for r in p.values() for i in r)
    assert indices == list(range(23)) and sorted(j for p in plans for j in p) == list(range(5))
    assert plan_shards(0, 5) == {}
