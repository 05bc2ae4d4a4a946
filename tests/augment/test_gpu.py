"""GPU checks: torch vs DALI on CUDA (skipped without a CUDA device)."""

import numpy as np
import pytest
import torch

from loffdata.augment import Augmenter, AugmentSpec

pytestmark = pytest.mark.gpu
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
def test_torch_backend_on_cuda_matches_cpu_without_noise():
    spec = AugmentSpec.preset("loffta", noise=0.0, rot90=0.5, mixup=0.5, num_classes=3)
    x = torch.randn(4, 32, 8, 8)
    y = torch.arange(4) % 3
    cpu, gpu = Augmenter(spec, backend="torch"), Augmenter(spec, backend="torch", device="cuda")
    a, ya = cpu(x, y, indices=np.arange(4))
    b, yb = gpu(x.cuda(), y.cuda(), indices=np.arange(4))
    torch.testing.assert_close(b.cpu(), a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(yb.cpu(), ya)


@cuda
@pytest.mark.dali
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_dali_gpu_matches_torch_gpu(dtype):
    pytest.importorskip("nvidia.dali")
    spec = AugmentSpec.preset("loffta", rot90=0.5, jitter=0.5, brightness=0.3, channel_dropout=0.3)
    x = torch.randn(4, 64, 16, 16, device="cuda").to(dtype)
    std = np.linspace(0.5, 2, 64)
    ref = Augmenter(spec, backend="torch", device="cuda", std=std)
    dali = Augmenter(spec, backend="auto", device="cuda", std=std)
    assert dali.backend_name == "dali"
    p = ref.params(np.arange(4), epoch=0, shape=(64, 16, 16))
    a, _ = ref.apply(x, None, p)
    b, _ = dali.apply(x, None, p)
    assert b.is_cuda and b.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    torch.testing.assert_close(b.float(), a.float(), rtol=tol, atol=tol)
