"""DALI (CPU-only mode) and torch backends give the same tensors for the same params."""

import numpy as np
import pytest
import torch

from loffdata.augment import Augmenter, AugmentSpec
from loffdata.augment.registry import EXAMPLES

pytest.importorskip("nvidia.dali")
pytestmark = pytest.mark.dali

OPS = EXAMPLES  # one table: every op's examples, from the registry
DTYPES = [torch.float32, torch.float16]


def tolerance(dtype):
    return {"rtol": 1e-5, "atol": 2e-5} if dtype == torch.float32 else {"rtol": 2e-3, "atol": 2e-3}


def compare(spec, shape, dtype, features, *, n=3, seed=0):
    c = shape[0]
    mean, std = np.linspace(-0.5, 0.5, c), np.linspace(0.5, 2.0, c)
    kw = {"seed": seed, "mean": mean, "std": std}
    ref, dali = Augmenter(spec, backend="torch", **kw), Augmenter(spec, backend="dali", **kw)
    x = features(n, *shape, dtype=dtype, seed=seed)
    y = torch.arange(n) % 4
    params = ref.params(np.arange(10, 10 + n), epoch=3, shape=shape)
    xr, yr = ref.apply(x, y, params)
    xd, yd = dali.apply(x, y, params)
    assert xr.shape == xd.shape and xr.dtype == xd.dtype == dtype
    torch.testing.assert_close(xd.float(), xr.float(), **tolerance(dtype))
    torch.testing.assert_close(yd, yr)
    return xr


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", sorted(OPS))
def test_each_operation_matches(op, dtype, features):
    compare(AugmentSpec.from_dict(OPS[op]), (6, 8, 8), dtype, features)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1536, 7, 7), (16, 7, 7), (24, 16, 12), (8, 32, 32)], ids=str)
@pytest.mark.parametrize("preset", ["loffta", "frofa", "none"])
def test_presets_match(preset, shape, dtype, features):
    compare(AugmentSpec.preset(preset, rot90=0.5, channel_dropout=0.5), shape, dtype, features, n=2)


@pytest.mark.parametrize("seed", range(4))
def test_random_param_draws_match(seed, features):
    spec = AugmentSpec.preset(
        "loffta",
        out_size=(9, 9),
        jitter=0.5,
        brightness=0.4,
        contrast=0.2,
        rot90=0.5,
        channel_dropout=0.3,
        mixup=0.3,
        cutmix=0.3,
        num_classes=4,
    )
    compare(spec, (12, 11, 13), torch.float32, features, n=4, seed=seed)


def test_bfloat16_input(features):
    spec = AugmentSpec.preset("loffta")
    x = features(2, 4, 8, 8, dtype=torch.bfloat16)
    ref, dali = Augmenter(spec, backend="torch"), Augmenter(spec, backend="dali")
    a, _ = ref(x, indices=np.arange(2))
    b, _ = dali(x, indices=np.arange(2))
    assert b.dtype == torch.bfloat16
    torch.testing.assert_close(a.float(), b.float(), rtol=1e-2, atol=1e-2)


def test_pipeline_cached_and_outputs_stay_valid(features):
    spec = AugmentSpec.preset("loffta")
    aug = Augmenter(spec, backend="dali")
    x = features(3, 4, 8, 8)
    first, _ = aug(x, indices=np.arange(3), epoch=0)
    kept = first.clone()
    second, _ = aug(x, indices=np.arange(3), epoch=1)
    aug(x, indices=np.arange(3), epoch=2)
    assert len(aug.backend._pipes) <= 2  # at most: with / without noise rows
    assert torch.equal(first, kept) and not torch.equal(first, second)


@pytest.mark.slow
def test_import_does_not_load_dali():
    import subprocess
    import sys

    code = (
        "import sys, loffdata.augment as a, loffdata.augment.registry; a.AugmentSpec; "
        "a.Augmenter; print('nvidia.dali' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
