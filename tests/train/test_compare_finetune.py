"""recipes/compare_finetune.py: augmentation helpers, one in-process setting, the --quick CLI."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "recipes" / "compare_finetune.py"


@pytest.fixture(scope="module")
def cf():
    return load_script(SCRIPT, "compare_finetune")


def test_identity_and_flip_boxes_resample_exactly(cf):
    x = torch.randn(2, 5, 6, 8)
    eye = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]]).repeat(2, 1, 1)
    assert torch.allclose(cf._resample(x, eye, (6, 8)), x, atol=1e-5)
    flip = eye.clone()
    flip[:, 0, 0] = -1
    assert torch.allclose(cf._resample(x, flip, (6, 8)), x.flip(-1), atol=1e-5)


def test_augmentations_keep_shapes_and_are_seeded(cf):
    images = torch.randint(0, 256, (3, 3, 40, 40), dtype=torch.uint8)
    out = cf.augment_images(images, size=32, gen=torch.Generator().manual_seed(1))
    assert out.shape == (3, 3, 32, 32) and out.dtype == torch.float32
    feats = torch.randn(3, 16, 7, 7).half()
    a = cf.augment_features(feats, gen=torch.Generator().manual_seed(1))
    b = cf.augment_features(feats, gen=torch.Generator().manual_seed(1))
    assert a.shape == feats.shape and a.dtype == torch.float32 and torch.equal(a, b)
    assert not torch.allclose(a, feats.float())


def test_feature_shape_matches_the_model(cf):
    assert cf.feature_shape("vit_small_patch16_224", 112) == (384, 7, 7)
    assert cf.feature_shape("vit_small_patch14_dinov2", 224) == (384, 16, 16)


def test_run_setting_in_process(cf):
    spec = cf.BenchSpec(
        setting="loffta",
        model="-",
        img_size=0,
        feature_shape=(32, 4, 4),
        classifier="deit_t",
        batch_size=2,
        steps=2,
        warmup=1,
        num_classes=3,
        device="cpu",
        pretrained=False,
        threads=1,
        amp=False,
        seed=0,
    )
    r = cf.run_setting(spec)
    assert r["samples_per_s"] > 0 and len(r["step_ms_all"]) == 2 and r["params_m"] > 0
    assert math.isfinite(r["peak_mem_mb"])


def test_preset_defaults_yield_to_explicit_options(cf):
    assert cf._resolve(True, {"batch_size": 16})["batch_size"] == 16
    assert cf._resolve(True, {})["model"] == cf.PRESETS["quick"]["model"]
    assert cf._resolve(False, {"model": None})["model"] == cf.PRESETS["default"]["model"]


#: the CLI's whole path (three interpreters, both settings, the ratios) on timm's tiny test
#: ViT: an explicit option wins over the ``--quick`` preset, so only the sizes shrink
TINY = ("--model", "test_vit", "--img_size", "64", "--classifier", "linear")
TINY += ("--steps", "1", "--warmup", "0")


@pytest.mark.slow
def test_quick_cli_prints_ratios_and_features_side_wins(tmp_path):
    out = tmp_path / "cmp.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", *TINY, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    match = re.search(
        r"^RATIO speedup=([\d.]+) memory_ratio=([\d.]+) speedup_best=([\d.]+)$", proc.stdout, re.M
    )
    assert match, proc.stdout
    speedup, memory, best = float(match[1]), float(match[2]), float(match[3])
    assert all(math.isfinite(v) and v > 0 for v in (speedup, memory, best))
    report = json.loads(out.read_text())
    assert report["speedup"] == pytest.approx(speedup, rel=1e-3)
    # the printed ratio is the one of the measured rates (how large it is: a benchmark's
    # figure, docs/benchmarks.md; a shared CI machine's timing proves nothing)
    rates = {k: r["samples_per_s"] for k, r in report["results"].items()}
    assert speedup == pytest.approx(rates["loffta"] / rates["finetune"], rel=1e-2)
    assert set(report["results"]) == {"finetune", "loffta"}
    assert "machine:" in proc.stdout and "finetune" in proc.stdout
