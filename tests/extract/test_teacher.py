"""Teacher logits as the ``logits`` extra: encode/decode, shard round trip (full and top-k),
extraction with ``teacher=``, augmented teacher views."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from loffdata.extract.images import load_image, shapes_source
from loffdata.extract.pipeline import ExtractConfig, build_model, build_transform
from loffdata.extract.teacher import augment_views, build_teacher
from loffdata.format.logits import (
    INDEX_EXTRA,
    LOGITS_EXTRA,
    decode_logits,
    encode_logits,
    logits_bytes,
)
from loffdata.format.writer import WriterConfig, write_dataset
from loffdata.loader import LoffLoader
from loffdata.loader.config import LoaderConfig
from loffdata.stream.config import StreamConfig
from tests.extract.test_extract import VIT, run
from tests.readback import read_split


def _logits(n: int, classes: int, targets: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, targets, classes)).astype(np.float32) * 3


def test_encode_topk_keeps_largest_descending():
    z = np.array([[0.5, 3.0, -1.0, 2.0, 2.5]], dtype=np.float32)
    enc = encode_logits(z, topk=3)
    assert enc[INDEX_EXTRA].dtype == np.int16 and enc[INDEX_EXTRA].tolist() == [[1, 4, 3]]
    assert enc[LOGITS_EXTRA].dtype == np.float16 and enc[LOGITS_EXTRA].tolist() == [[3.0, 2.5, 2.0]]
    dense = decode_logits(enc, num_classes=5)
    assert dense[0, [1, 4, 3]].tolist() == [3.0, 2.5, 2.0] and np.isneginf(dense[0, [0, 2]]).all()
    assert set(encode_logits(z, topk=5)) == {LOGITS_EXTRA}  # k >= K: stored in full
    assert encode_logits(np.zeros((1, 40000)), topk=2)[INDEX_EXTRA].dtype == np.int32
    for bad in (np.zeros((2, 2, 2)), np.array([np.nan, 1.0])):
        with pytest.raises(ValueError):
            encode_logits(bad)
    with pytest.raises(ValueError, match="outside"):
        decode_logits(
            {LOGITS_EXTRA: enc[LOGITS_EXTRA], INDEX_EXTRA: enc[INDEX_EXTRA] + 3}, num_classes=5
        )


@pytest.mark.parametrize("topk", [None, 4])
def test_logits_extra_round_trip_through_shards_and_loader(tmp_path, topk):
    n, classes, targets = 12, 9, 2
    z = _logits(n, classes, targets)
    samples = [
        (f"s{i:03d}", np.full((4, 2, 2), i, np.float32), i % 3, encode_logits(z[i], topk=topk))
        for i in range(n)
    ]
    write_dataset(
        str(tmp_path / "d"),
        iter(samples),
        config=WriterConfig(max_samples=5),
        classes=[f"c{j}" for j in range(classes)],
    )  # the teacher's classes are the dataset's
    manifest, stored = read_split(tmp_path / "d")
    k = topk or classes
    assert manifest.extras[LOGITS_EXTRA].shape == (targets, k)
    for i, s in enumerate(stored):
        dense = decode_logits(s.extras, num_classes=classes)
        ref = z[i].astype(np.float16).astype(np.float32)
        if topk is None:
            np.testing.assert_array_equal(dense, ref)
        else:
            top = np.argsort(-z[i], axis=1)[:, :topk]
            np.testing.assert_array_equal(
                np.take_along_axis(dense, top, 1), np.take_along_axis(ref, top, 1)
            )
            assert np.isneginf(dense).sum() == targets * (classes - topk)
        assert sum(v.nbytes for v in s.extras.values()) == logits_bytes(
            num_classes=classes, topk=topk, targets=targets
        )
    config = LoaderConfig(
        stream=StreamConfig(batch_size=4, shuffle=False),
        augment=None,
        num_workers=0,
        return_extras=True,
    )
    loader = LoffLoader(str(tmp_path / "d"), config)
    batch = next(iter(loader))
    assert batch.extras[LOGITS_EXTRA].shape == (4, targets, k)
    want = {LOGITS_EXTRA: torch.from_numpy(stored[0].extras[LOGITS_EXTRA].copy())}
    torch.testing.assert_close(batch.extras[LOGITS_EXTRA][0], want[LOGITS_EXTRA])


def test_storage_cost_formula():
    assert logits_bytes(num_classes=1000) == 2000
    assert logits_bytes(num_classes=1000, topk=10) == 40
    assert logits_bytes(num_classes=1000, topk=10, targets=5) == 200
    assert logits_bytes(num_classes=50000, topk=10) == 60


def test_augment_views_deterministic_and_view0_is_the_image():
    x = torch.randn(3, 3, 16, 16)
    a = augment_views(x, [5, 6, 7], views=3, seed=1)
    assert a.shape == (9, 3, 16, 16)
    torch.testing.assert_close(a[::3], x)
    torch.testing.assert_close(
        augment_views(x[1:2], [6], views=3, seed=1), a[3:6]
    )  # batch-independent
    assert not torch.allclose(a[1], augment_views(x[:1], [5], views=3, seed=2)[1])


@pytest.mark.parametrize(("topk", "views"), [(None, 1), (3, 2)])
def test_extraction_stores_teacher_logits(tmp_path, topk, views):
    weights = tmp_path / "vit.pth"  # the extraction and the reference load the same random weights
    torch.save(timm.create_model(VIT["model"]).state_dict(), weights)
    kw = dict(
        VIT,
        checkpoint=str(weights),
        shapes_counts={"train": 5},
        shard_size=3,
        teacher="self",
        teacher_topk=topk,
        teacher_views=views,
    )
    manifests = run(tmp_path, **kw)
    manifest, stored = read_split(tmp_path / "out" / "train")
    assert manifest.num_samples == 5 and LOGITS_EXTRA in manifest.extras
    cfg = ExtractConfig(out=str(tmp_path / "ref"), **kw, progress=False, workers=0)
    model = build_model(cfg)
    transform, _ = build_transform(model, cfg)
    records = shapes_source(train=5, val=0, seed=cfg.seed).splits[
        "train"
    ]  # what the extraction read
    x = torch.stack([transform(load_image(r.path)) for r in records])
    teacher = build_teacher(cfg, model, torch.device("cpu"))
    ref = teacher.logits(x, list(range(5))).numpy()
    with torch.inference_mode():
        torch.testing.assert_close(
            torch.from_numpy(ref[:, 0]), model(x).float(), atol=1e-4, rtol=1e-4
        )
    for i, s in enumerate(stored):
        dense = decode_logits(s.extras, num_classes=ref.shape[-1])
        kept = np.isfinite(dense)
        assert kept.sum() == views * (topk or ref.shape[-1])
        np.testing.assert_allclose(
            dense[kept], ref[i][kept], atol=2e-2, rtol=2e-3
        )  # float16 storage
    assert manifests["train"].num_samples == 5
