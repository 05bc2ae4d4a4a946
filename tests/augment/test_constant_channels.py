"""With normalisation a constant channel comes out as exactly 0 (its normalised constant),
not its rounding amplified by 1 / std floor; DALI (CPU mode) and torch agree exactly."""

import numpy as np
import pytest
import torch

from loffdata.augment import Augmenter, AugmentSpec

MEAN = np.array([0.0, 3.0 + 3e-7, 0.0, -1.0])  # a dataset mean a hair off the stored constant
STD = np.array([1.0, 0.0, 2.0, 0.0])
SPECS = {
    "frofa+noise": {"preset": "frofa", "noise": 1.0, "normalize": True},
    "crop+jitter": {
        "crop": 1.0,
        "jitter": 1.0,
        "brightness": 0.5,
        "contrast": 0.3,
        "normalize": True,
    },
}


def _batch(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 4, 6, 6, generator=g).to(dtype)
    x[:, 1], x[:, 3] = 3.0, -1.0  # dead channels hold their value
    return x


@pytest.mark.parametrize("spec", list(SPECS))
def test_a_constant_channel_normalises_to_exactly_zero(spec):
    aug = Augmenter(AugmentSpec.from_dict(SPECS[spec]), mean=MEAN, std=STD)
    out, _ = aug(_batch(), indices=np.arange(4))
    assert torch.equal(out[:, 1], torch.zeros_like(out[:, 1])) and torch.equal(
        out[:, 3], torch.zeros_like(out[:, 3])
    )
    assert out[:, 0].abs().max() > 0.1  # the other channels are augmented as before


@pytest.mark.parametrize("spec", list(SPECS))
def test_dali_and_torch_agree_exactly_on_a_constant_channel(spec):
    pytest.importorskip("nvidia.dali")
    s = AugmentSpec.from_dict(SPECS[spec])
    ref = Augmenter(s, backend="torch", mean=MEAN, std=STD)
    dali = Augmenter(s, backend="dali", mean=MEAN, std=STD)
    x, y = _batch(), torch.arange(4) % 2
    params = ref.params(np.arange(4), epoch=1, shape=(4, 6, 6))
    xr, _ = ref.apply(x, y, params)
    xd, _ = dali.apply(x, y, params)
    assert torch.equal(xr[:, 1], xd[:, 1]) and torch.equal(xd[:, 1], torch.zeros_like(xd[:, 1]))


def test_inspect_counts_constant_channels(tmp_path):
    from loffdata.cli.main import summarize
    from loffdata.format.writer import write_dataset

    items = []
    for i in range(4):
        x = np.random.default_rng(i).standard_normal((3, 2, 2)).astype(np.float32)
        x[2] = 5.0
        items.append((f"k{i}", x, 0))
    m = write_dataset(str(tmp_path / "ds"), items)
    assert "constant channels 1" in summarize(m)
