"""The GPU path's host-side logic, checked without a GPU (DALI in CPU-only mode).

What needs a device (streams, DLPack on CUDA, sync counts) is in ``benchmarks/gpu_check.py``.
"""

import numpy as np
import pytest
import torch

from loffdata.augment import Augmenter, AugmentSpec
from loffdata.augment.channel import constant_channels, noise_field
from loffdata.augment.staging import stage
from loffdata.augment.torch_backend import TorchBackend

OPS = {  # each step of the pipeline, alone and together
    "flip": {"hflip": 0.5, "vflip": 0.5},
    "crop": {"crop": 1.0, "out_size": (5, 6)},
    "jitter_noise": {"jitter": 1.0, "brightness": 0.5, "contrast": 0.3, "noise": 0.6},
    "loffta": {"preset": "loffta", "rot90": 0.5},
}


def _pair(spec, *, std=None, **dali_options):
    from loffdata.augment.dali_backend import DaliBackend

    ref = Augmenter(spec, backend="torch", std=std)
    dali = Augmenter(spec, backend="dali", std=std)
    dali.backend = DaliBackend(spec, std=std, **dali_options)
    return ref, dali


@pytest.mark.dali
def test_tensor_list_output_needs_as_tensor_for_feed_ndarray():
    """Issue 18 item 1, reproduced in DALI's CPU mode: ``feed_ndarray`` refuses a TensorList."""
    pytest.importorskip("nvidia.dali")
    from nvidia.dali import fn, pipeline_def
    from nvidia.dali.plugin.pytorch import feed_ndarray

    from loffdata.augment.dali_backend import _to_torch

    @pipeline_def(batch_size=2, num_threads=1, device_id=None, prefetch_queue_depth=1)
    def double():
        return fn.external_source(name="x", layout="CHW") * 2.0

    pipe = double()
    pipe.build()
    pipe.feed_input("x", np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4))
    (out,) = pipe.run()
    with pytest.raises(AssertionError, match="Shapes do not match"):
        feed_ndarray(out, torch.empty(2, 3, 4, 4))  # what the GPU path did
    copied = _to_torch(out, torch.device("cpu"), copy=True)
    shared = _to_torch(out, torch.device("cpu"), copy=False)
    expect = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4) * 2
    assert torch.equal(copied, expect) and torch.equal(shared, expect)


@pytest.mark.dali
@pytest.mark.parametrize(
    "options", [{"output": "copy"}, {"layout": "HWC"}, {"minibatch_size": 2}], ids=str
)
@pytest.mark.parametrize("op", sorted(OPS))
def test_dali_options_match_torch(op, options, features):
    pytest.importorskip("nvidia.dali")
    spec = AugmentSpec.from_dict(OPS[op])
    std = np.linspace(0.5, 2.0, 12)
    ref, dali = _pair(spec, std=std, **options)
    x = features(3, 12, 8, 8)
    p = ref.params(np.arange(3), epoch=1, shape=(12, 8, 8))
    a, _ = ref.apply(x, None, p)
    b, _ = dali.apply(x, None, p)
    assert b.is_contiguous()
    torch.testing.assert_close(b, a, rtol=1e-5, atol=2e-5)


@pytest.mark.dali
def test_pipeline_cache_is_bounded(features):
    pytest.importorskip("nvidia.dali")
    spec = AugmentSpec.preset("loffta", noise=1.0)
    _, dali = _pair(spec, max_pipelines=2)
    for hw in (
        3,
        4,
        5,
        6,
    ):  # the batch size is not part of the key (a short batch reuses a pipeline)
        dali(features(2, 4, hw, hw), indices=np.arange(2))
    assert len(dali.backend._pipes) == 2
    assert [k[0][1] for k in dali.backend._pipes] == [5, 6]  # the two most recent sample shapes


@pytest.mark.parametrize("backend", ["torch", "dali"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.bfloat16], ids=str)
def test_identity_preset_returns_the_batch_itself(backend, dtype, features):
    if backend == "dali":
        pytest.importorskip("nvidia.dali")
    aug = Augmenter(AugmentSpec.preset("none"), backend=backend)
    x, y = features(4, 6, 5, 5, dtype=dtype), torch.arange(4)
    out, labels = aug(x, y, indices=np.arange(4))
    assert out is x and labels is y
    cast = Augmenter(AugmentSpec.preset("none", out_dtype="float32"), backend=backend)
    assert cast(x, indices=np.arange(4))[0].dtype == torch.float32
    assert (
        AugmentSpec.preset("none").is_identity
        and not AugmentSpec.preset("none", views=2).is_identity
    )
    assert not AugmentSpec.preset("loffta").is_identity


def test_steps_that_do_nothing_keep_the_input_dtype(features):
    """A flip-only batch is flipped in its own dtype (exact), with no float32 round trip."""
    spec = AugmentSpec(hflip=1.0)
    x = features(3, 4, 5, 5, dtype=torch.float16)
    out, _ = Augmenter(spec, backend="torch")(x, indices=np.arange(3))
    assert out.dtype == torch.float16 and torch.equal(out, x.flip(-1))


def test_noise_field_on_the_cpu_draws_only_noisy_rows():
    spec = AugmentSpec(noise=0.5, noise_std=(0.1, 0.2))
    p = Augmenter(spec).params(np.arange(16), epoch=0, shape=(3, 4, 4))
    z = noise_field(p, (4, 4), device="cpu")
    quiet = p.noise_scale == 0
    assert 0 < quiet.sum() < 16 and z.shape == (16, 3, 4, 4)
    assert torch.all(z[torch.from_numpy(quiet)] == 0) and torch.all(
        z[torch.from_numpy(~quiet)] != 0
    )


def test_stage_keeps_dtypes_shapes_and_values():
    arrays = {
        "m": np.array([True, False, True]),
        "k": np.arange(6).reshape(2, 3),
        "f": np.ones((2, 1), np.float32),
    }
    out = stage("cpu", **arrays)
    for k, v in arrays.items():
        assert out[k].dtype == torch.from_numpy(v).dtype and np.array_equal(out[k].numpy(), v)


def test_constant_channels_get_the_documented_std_floor(features):
    std = np.array([1.0, 0.0, 2.0, 0.0])
    mean = np.array([0.0, 3.0, 0.0, -1.0])
    assert constant_channels(std) == 2 and constant_channels(np.zeros(3)) == 3
    x = features(4, 4, 6, 6)
    x[:, 1], x[:, 3] = 3.0, -1.0  # dead channels hold their mean
    spec = AugmentSpec.from_dict({"preset": "frofa", "noise": 1.0, "normalize": True})
    out, _ = Augmenter(spec, mean=mean, std=std)(x, indices=np.arange(4))
    assert torch.isfinite(out).all()
    plain = AugmentSpec.preset("loffta", noise=1.0)
    out, _ = Augmenter(plain, mean=mean, std=std)(x, indices=np.arange(4))
    torch.testing.assert_close(out[:, 1], torch.full_like(out[:, 1], 3.0), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="std"):
        TorchBackend(plain, std=[1.0, -1.0]).coefficients(
            Augmenter(plain).params(np.arange(1), epoch=0, shape=(2, 3, 3))
        )


def test_mixing_refuses_unlabelled_samples(features):
    spec = AugmentSpec(mixup=1.0, num_classes=3)
    aug = Augmenter(spec)
    with pytest.raises(ValueError, match="unlabelled"):
        aug(features(3, 2, 4, 4), torch.tensor([0, -1, 2]), indices=np.arange(3))
    with pytest.raises(ValueError, match="out-of-range"):
        aug(features(3, 2, 4, 4), torch.tensor([0, 3, 2]), indices=np.arange(3))
