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
from loffdata.format.logits import INDEX_EXTRA, LOGITS_EXTRA, encode_logits
from loffdata.format.writer import WriterConfig, write_dataset
from loffdata.loader import LoffLoader
from loffdata.loader.loaderconfig import LoaderConfig
from loffdata.stream.streamconfig import StreamConfig
from loffdata.train.distill import teacher_probs
from tests.extract.test_extract import VIT, run
from tests.readback import read_split


def _logits(n: int, classes: int, targets: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, targets, classes)).astype(np.float32) * 3


def _probs(extras: dict, classes: int) -> np.ndarray:
    """The teacher distribution the trainer reads from one sample's extras."""
    index = extras.get(INDEX_EXTRA)
    return teacher_probs(
        torch.from_numpy(extras[LOGITS_EXTRA].astype(np.float32))[None],
        None if index is None else torch.from_numpy(index.astype(np.int64))[None],
        num_classes=classes,
    )[0].numpy()


def _softmax_over(z: np.ndarray, keep: np.ndarray, classes: int) -> np.ndarray:
    """Mean over targets of the softmax over the classes ``keep`` (others get 0)."""
    vals = np.take_along_axis(z, keep, 1)
    p = np.exp(vals - vals.max(1, keepdims=True))
    dense = np.zeros((z.shape[0], classes))
    np.put_along_axis(dense, keep, p / p.sum(1, keepdims=True), 1)
    return dense.mean(0)


def test_encode_topk_keeps_largest_descending():
    z = np.array([[0.5, 3.0, -1.0, 2.0, 2.5]], dtype=np.float32)
    enc = encode_logits(z, topk=3)
    assert enc[INDEX_EXTRA].dtype == np.int16 and enc[INDEX_EXTRA].tolist() == [[1, 4, 3]]
    assert enc[LOGITS_EXTRA].dtype == np.float16 and enc[LOGITS_EXTRA].tolist() == [[3.0, 2.5, 2.0]]
    probs = _probs(enc, 5)
    assert probs[[0, 2]].tolist() == [0.0, 0.0] and probs[1] > probs[4] > probs[3] > 0
    assert set(encode_logits(z, topk=5)) == {LOGITS_EXTRA}  # k >= K: stored in full
    assert encode_logits(np.zeros((1, 40000)), topk=2)[INDEX_EXTRA].dtype == np.int32
    for bad in (np.zeros((2, 2, 2)), np.array([np.nan, 1.0])):
        with pytest.raises(ValueError):
            encode_logits(bad)


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
        ref = z[i].astype(np.float16).astype(np.float32)
        top = np.argsort(-z[i], axis=1, kind="stable")[:, :k]
        want = _softmax_over(ref, top, classes)
        np.testing.assert_allclose(_probs(s.extras, classes), want, rtol=1e-5)
        index_bytes = 0 if topk is None else 2  # int16 class indices
        assert sum(v.nbytes for v in s.extras.values()) == (2 + index_bytes) * targets * k
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
        values = s.extras[LOGITS_EXTRA].astype(np.float32)
        index = s.extras.get(INDEX_EXTRA)
        want = ref[i] if index is None else np.take_along_axis(ref[i], index.astype(np.int64), 1)
        assert values.shape == (views, topk or ref.shape[-1])
        np.testing.assert_allclose(values, want, atol=2e-2, rtol=2e-3)  # float16 storage
    assert manifests["train"].num_samples == 5
