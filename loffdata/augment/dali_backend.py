"""DALI backend: the heavy per-element steps in one DALI pipeline, the rest in torch.

Runs on the GPU (``external_source(device="gpu")`` fed torch CUDA tensors) or, without
a GPU, in DALI's CPU-only mode (``device_id=None``, fed numpy views), which is how the
tests check it against the torch backend. DALI is imported lazily, on first use.

Which step runs where (same order and semantics as :mod:`loffdata.augment.torch_backend`):

==========================================  =========================================
step                                        DALI backend
==========================================  =========================================
pooling (integer / adaptive)                torch, before the pipeline (DALI has no pooling op)
repeat per view, bfloat16 -> float32         torch, before the pipeline
float16 -> float32 cast                      DALI ``fn.cast`` (resize/arithmetic refuse fp16)
random resized crop + flips                  DALI ``fn.resize(roi_start, roi_end,
                                            antialias=False)``; a reversed ROI flips
jitter, noise, normalise, channel dropout    DALI arithmetic ``x * A + B + z * S``; the
                                            noise field ``z`` is drawn by torch on the
                                            device and fed as an input
rot90, mixup/cutmix, final cast              torch, after the pipeline (no DALI op)
==========================================  =========================================

A pipeline is built once per (spec, shape, dtype, batch size, device, which steps
this batch needs) and cached on the backend object.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from loffdata.augment.channel import is_identity, noise_field
from loffdata.augment.params import Params
from loffdata.augment.spec import AugmentSpec
from loffdata.augment.torch_backend import (
    TorchBackend,
    finish,
    mix,
    pool,
    prepare_labels,
    repeat_views,
    rot90,
)

__all__ = ["DaliBackend", "dali_available"]

_DALI_DTYPES = {torch.float16: "FLOAT16", torch.float32: "FLOAT"}


def dali_available() -> bool:
    """Whether ``nvidia.dali`` can be imported."""
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


class DaliBackend(TorchBackend):
    """Applies :class:`Params` with a cached DALI pipeline (plus torch for the steps DALI lacks).

    Args:
        spec: the augmentation spec.
        mean: manifest per-channel mean, or None.
        std: manifest per-channel std, or None.
        num_threads: DALI CPU threads (default: number of CPUs, at most 4).
    """

    name = "dali"

    def __init__(
        self,
        spec: AugmentSpec,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        num_threads: int | None = None,
    ) -> None:
        if not dali_available():
            raise ImportError(
                "the DALI backend needs nvidia-dali (pip install nvidia-dali-cuda120)"
            )
        super().__init__(spec, mean=mean, std=std)
        self.num_threads = num_threads or min(4, os.cpu_count() or 1)
        self._pipes: dict[tuple, Any] = {}

    def apply(self, x: torch.Tensor, y: torch.Tensor | None, params: Params):
        """Augment ``x`` [N, C, H, W] (and labels ``y`` [N]) with ``params``."""
        dtype = x.dtype
        x = repeat_views(pool(x, self.spec), self.spec.views)
        x = (x if x.dtype in _DALI_DTYPES else x.float()).contiguous()
        z = noise_field(params, params.out_hw, device=x.device)
        x = self._run(x, params, z)
        x = rot90(x, params)
        y = prepare_labels(y, self.spec.views, params.rows)
        x, y = mix(x, y, params, num_classes=self.spec.num_classes if self.spec.mixing else None)
        return finish(x, dtype, self.spec), y

    def _run(self, x: torch.Tensor, params: Params, z: torch.Tensor | None) -> torch.Tensor:
        resize = params.resamples() or bool(params.hflip.any() or params.vflip.any())
        a, b, s = self.coefficients(params)
        affine = not is_identity(a, b)
        if not (resize or affine or z is not None):
            return x.float()
        key = (tuple(x.shape), x.dtype, str(x.device), resize, affine, z is not None, params.out_hw)
        pipe = self._pipes.get(key)
        if pipe is None:
            pipe = self._pipes[key] = _build(key, num_threads=self.num_threads)
        start, end = params.roi()
        feeds = {"x": x}
        if affine:
            feeds.update(a=a[:, :, None, None], b=b[:, :, None, None])
        if resize:
            feeds.update(roi_start=start, roi_end=end)
        if z is not None:
            feeds.update(z=z, s=s[:, :, None, None])
        for name, value in feeds.items():
            _feed(pipe, name, value, x.device)
        (out,) = pipe.run()
        return _to_torch(out, x.device)


def _feed(pipe: Any, name: str, value: Any, device: torch.device) -> None:
    """Feed one input: torch CUDA tensors as is (with the current stream), else numpy."""
    if isinstance(value, torch.Tensor) and value.is_cuda and name in ("x", "z"):
        pipe.feed_input(name, value, cuda_stream=torch.cuda.current_stream(device).cuda_stream)
        return
    if isinstance(value, torch.Tensor):
        value = value.numpy()
    pipe.feed_input(name, np.ascontiguousarray(value))


def _to_torch(out: Any, device: torch.device) -> torch.Tensor:
    """DALI TensorList -> torch tensor on ``device`` (DLPack on CPU, copy on GPU)."""
    if device.type != "cuda":
        return torch.from_dlpack(out.as_tensor())
    from nvidia.dali.plugin.pytorch import feed_ndarray

    dense = out.as_tensor()
    res = torch.empty(tuple(dense.shape()), dtype=torch.float32, device=device)
    feed_ndarray(out, res, cuda_stream=torch.cuda.current_stream(device).cuda_stream)
    return res


def _build(key: tuple, *, num_threads: int) -> Any:
    """Build the pipeline for one cache key."""
    from nvidia.dali import fn, pipeline_def, types

    shape, dtype, device, resize, affine, noise, out_hw = key
    dev = torch.device(device)
    gpu = dev.type == "cuda"
    place = "gpu" if gpu else "cpu"

    @pipeline_def(
        batch_size=shape[0],
        num_threads=num_threads,
        device_id=(dev.index or 0) if gpu else None,
        prefetch_queue_depth=1,
    )
    def pipe():
        x = fn.external_source(
            name="x", device=place, layout="CHW", dtype=getattr(types, _DALI_DTYPES[dtype])
        )
        x = fn.cast(x, dtype=types.FLOAT) if dtype == torch.float16 else x
        if resize:
            start = fn.external_source(name="roi_start")
            end = fn.external_source(name="roi_end")
            x = fn.resize(
                x,
                size=list(out_hw),
                roi_start=start,
                roi_end=end,
                antialias=False,
                interp_type=types.INTERP_LINEAR,
                device=place,
            )
        if affine:
            x = x * _arg(fn, "a", gpu) + _arg(fn, "b", gpu)
        if noise:
            x = x + fn.external_source(name="z", device=place, layout="CHW") * _arg(fn, "s", gpu)
        return x

    p = pipe()
    p.build()
    return p


def _arg(fn: Any, name: str, gpu: bool) -> Any:
    """A per-sample [C, 1, 1] coefficient input, moved to the GPU when the pipeline is."""
    node = fn.external_source(name=name, layout="CHW")
    return node.gpu() if gpu else node
