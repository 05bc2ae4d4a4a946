"""Augmentation strength by similarity: the search hits its target within 0.02."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from loffdata.augment.similarity import calibrate, mean_similarity, scaled
from loffdata.augment.spec import AugmentSpec


def _maps(n: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(
        n, 16, 1, 1, generator=g
    )  # per-sample channel profile, plus spatial variation
    return base + 0.5 * torch.randn(n, 16, 6, 6, generator=g)


@pytest.mark.parametrize(
    ("preset", "target"),
    [
        ("loffta", 0.8),
        ("loffta", 0.6),
        ("frofa", 0.9),
        ("frofa", 0.7),
        ("none", 0.95),
        ("none", 0.5),
    ],
)
def test_search_hits_target(preset, target):
    x = _maps()
    spec = AugmentSpec.preset(preset, target_similarity=target)
    if spec.noise == 0 and spec.jitter == 0:
        spec = spec.replace(noise=1.0)  # "none" plus noise: the unit magnitudes are scaled
    out, record = calibrate(spec, x, seed=3)
    assert abs(record["achieved"] - target) <= 0.02
    assert out.target_similarity == target and out.noise_std == tuple(record["noise_std"])
    # it generalises: other samples and other draws land near the target too (sampling noise)
    assert abs(mean_similarity(out, _maps(256, seed=1), seed=7) - target) <= 0.04


def test_similarity_falls_with_the_magnitude():
    x, spec = (
        _maps(),
        AugmentSpec(noise=1.0, noise_std=(0.0, 0.5), jitter=1.0, brightness=0.2, contrast=0.2),
    )
    sims = [mean_similarity(scaled(spec, f), x) for f in (0.0, 0.5, 1.0, 2.0, 4.0)]
    assert sims[0] == pytest.approx(1.0, abs=1e-5) and np.all(np.diff(sims) < 0)


def test_unreachable_or_unscalable_targets_refused():
    x = _maps()
    with pytest.raises(ValueError, match="noise or jitter"):
        calibrate(AugmentSpec(hflip=0.5, target_similarity=0.8), x)
    with pytest.raises(
        ValueError, match="out of reach"
    ):  # dropping half the channels costs more than 1%
        calibrate(
            AugmentSpec(
                noise=1.0, channel_dropout=1.0, channel_dropout_rate=0.5, target_similarity=0.99
            ),
            x,
        )
    with pytest.raises(ValueError, match="target_similarity"):
        AugmentSpec(target_similarity=1.5)


def test_loader_calibrates_at_start_and_the_recipe_records_it(tmp_path):
    import json

    from loffdata.format.writer import WriterConfig, write_dataset
    from loffdata.loader import LoffLoader
    from loffdata.train.trainer import CONFIG_NAME, TrainConfig, train

    x = _maps(96, seed=2).numpy()
    write_dataset(
        str(tmp_path / "d"),
        ((f"s{i:03d}", x[i], i % 3) for i in range(96)),
        config=WriterConfig(max_samples=40, dtype="float32"),
        classes=list("abc"),
    )
    augment = {"preset": "loffta", "target_similarity": 0.7}
    loader = LoffLoader(str(tmp_path / "d"), batch_size=16, augment=augment, num_workers=0)
    record = loader.similarity_search
    assert record["samples"] == 96 and abs(record["achieved"] - 0.7) <= 0.02
    assert (
        loader.spec.noise_std
        == tuple(record["noise_std"])
        != AugmentSpec.preset("loffta").noise_std
    )
    assert (
        LoffLoader(
            str(tmp_path / "d"), batch_size=16, augment="loffta", num_workers=0
        ).similarity_search
        is None
    )
    config = TrainConfig(
        train=str(tmp_path / "d"),
        out=str(tmp_path / "run"),
        model="linear",
        batch_size=16,
        epochs=1,
        warmup_epochs=0,
        device="cpu",
        progress=False,
        augment=augment,
    )
    train(config)
    saved = json.loads((tmp_path / "run" / CONFIG_NAME).read_text())["resolved"]
    assert saved["similarity_search"] == record
    assert saved["augment"]["noise_std"] == record["noise_std"]
