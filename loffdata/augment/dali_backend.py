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
this batch needs) and kept in a small LRU cache on the backend object
(``max_pipelines``, default 8).

On the GPU nothing makes the host wait: the big inputs (the maps, the noise field) are
fed without a copy (``no_copy``) on torch's current stream, the pipeline is run with that
stream (``pipe.run(stream)``: outputs bound to it, not host-synchronous), and its output
reaches torch through DLPack on the same stream (no output copy). ``output="copy"``
instead copies it into a fresh torch tensor with ``feed_ndarray`` (the fallback).

``fn.resize`` treats each channel of a CHW map as a frame of its own; ``minibatch_size``
(frames per kernel launch, DALI's default 32) and ``layout="HWC"`` (maps transposed to
channels-last around the pipeline) are there so that ``make gpu-check`` can measure what
is fastest on a given GPU.
"""

from __future__ import annotations

import os
from collections import OrderedDict
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
        max_pipelines: pipelines kept built (least recently used ones are dropped).
        minibatch_size: frames per ``fn.resize`` kernel call (``None``: DALI's default).
        layout: ``"CHW"`` (the maps as they are) or ``"HWC"`` (transposed around the pipeline).
        output: ``"dlpack"`` (no copy, stream-ordered) or ``"copy"`` (``feed_ndarray``).
    """

    name = "dali"

    def __init__(
        self,
        spec: AugmentSpec,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        num_threads: int | None = None,
        max_pipelines: int = 8,
        minibatch_size: int | None = None,
        layout: str = "CHW",
        output: str = "dlpack",
    ) -> None:
        if not dali_available():
            raise ImportError(
                "the DALI backend needs nvidia-dali (pip install nvidia-dali-cuda120)"
            )
        if layout not in ("CHW", "HWC") or output not in ("dlpack", "copy") or max_pipelines < 1:
            raise ValueError(
                f"need layout 'CHW' or 'HWC', output 'dlpack' or 'copy', max_pipelines >= 1; "
                f"got {layout!r}, {output!r}, {max_pipelines}"
            )
        super().__init__(spec, mean=mean, std=std)
        self.num_threads = num_threads or min(4, os.cpu_count() or 1)
        self.max_pipelines, self.minibatch_size = max_pipelines, minibatch_size
        self.layout, self.output = layout, output
        self._pipes: OrderedDict[tuple, Any] = OrderedDict()

    def apply(self, x: torch.Tensor, y: torch.Tensor | None, params: Params):
        """Augment ``x`` [N, C, H, W] (and labels ``y`` [N]) with ``params``."""
        dtype = x.dtype
        x = repeat_views(pool(x, self.spec), self.spec.views)
        z = noise_field(params, params.out_hw, device=x.device)
        x = self._run(x, params, z)
        x = rot90(x, params)
        y = prepare_labels(y, self.spec.views, params.rows)
        x, y = mix(x, y, params, num_classes=self.spec.num_classes if self.spec.mixing else None)
        return finish(x, dtype, self.spec), y

    def _run(self, x: torch.Tensor, params: Params, z: torch.Tensor | None) -> torch.Tensor:
        """The pipeline's steps on ``x`` (float32 out); ``x`` itself when none is needed."""
        resize = params.resamples() or bool(params.hflip.any() or params.vflip.any())
        a, b, s = self.coefficients(params)
        affine = not is_identity(a, b)
        if not (resize or affine or z is not None):
            return x
        x = x if x.dtype in _DALI_DTYPES else x.float()
        hwc = self.layout == "HWC"
        x = (x.permute(0, 2, 3, 1) if hwc else x).contiguous()
        key = (tuple(x.shape), x.dtype, str(x.device), resize, affine, z is not None, params.out_hw)
        pipe = self._pipeline(key)
        start, end = params.roi()
        per_channel = (slice(None), None, None, slice(None)) if hwc else (slice(None), slice(None), None, None)
        feeds = {"x": x}
        if affine:
            feeds.update(a=a[per_channel], b=b[per_channel])
        if resize:
            feeds.update(roi_start=start, roi_end=end)
        if z is not None:
            feeds.update(z=(z.permute(0, 2, 3, 1).contiguous() if hwc else z), s=s[per_channel])
        for name, value in feeds.items():
            _feed(pipe, name, value, x.device)
        stream = torch.cuda.current_stream(x.device) if x.is_cuda else None
        (out,) = pipe.run(stream.cuda_stream) if stream is not None else pipe.run()
        res = _to_torch(out, x.device, copy=self.output == "copy")
        return res.permute(0, 3, 1, 2).contiguous() if hwc else res

    def _pipeline(self, key: tuple) -> Any:
        """The cached pipeline of ``key`` (built on a miss; the oldest dropped past the bound)."""
        pipe = self._pipes.get(key)
        if pipe is None:
            pipe = self._pipes[key] = _build(
                key, num_threads=self.num_threads, minibatch_size=self.minibatch_size,
                layout=self.layout,
            )
            while len(self._pipes) > self.max_pipelines:
                self._pipes.popitem(last=False)
        self._pipes.move_to_end(key)
        return pipe


def _feed(pipe: Any, name: str, value: Any, device: torch.device) -> None:
    """Feed one input: torch CUDA tensors as is (on the current stream), else numpy.

    The maps and the noise field are external sources with ``no_copy``: DALI reads them in
    place (they stay referenced until the run that reads them has returned its outputs).
    """
    if isinstance(value, torch.Tensor) and value.is_cuda:
        pipe.feed_input(name, value, cuda_stream=torch.cuda.current_stream(device).cuda_stream)
        return
    if isinstance(value, torch.Tensor):
        value = value.numpy()
    pipe.feed_input(name, np.ascontiguousarray(value))


def _to_torch(out: Any, device: torch.device, *, copy: bool = False) -> torch.Tensor:
    """A dense DALI TensorList -> torch tensor on ``device``.

    The list is made one tensor first (``as_tensor``; ``feed_ndarray`` refuses a TensorList,
    whose ``shape()`` is a list of shapes). Without ``copy`` it is handed over by DLPack: no
    copy, and on CUDA torch's current stream waits for DALI's (stream-ordered, the host does
    not wait). With ``copy`` it is copied into a fresh tensor with ``feed_ndarray``.
    """
    dense = out.as_tensor()
    if not copy:
        return torch.from_dlpack(dense)
    from nvidia.dali.plugin.pytorch import feed_ndarray

    res = torch.empty(tuple(dense.shape()), dtype=torch.float32, device=device)
    stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else None
    feed_ndarray(dense, res, cuda_stream=stream)
    return res


def _build(key: tuple, *, num_threads: int, minibatch_size: int | None = None, layout: str = "CHW") -> Any:
    """Build the pipeline for one cache key."""
    from nvidia.dali import fn, pipeline_def, types

    shape, dtype, device, resize, affine, noise, out_hw = key
    dev = torch.device(device)
    gpu = dev.type == "cuda"
    place = "gpu" if gpu else "cpu"

    @pipeline_def(
        batch_size=shape[0],
        num_threads=num_threads,
        device_id=(torch.cuda.current_device() if dev.index is None else dev.index) if gpu else None,
        prefetch_queue_depth=1,
    )
    def pipe():
        x = fn.external_source(
            name="x", device=place, layout=layout, dtype=getattr(types, _DALI_DTYPES[dtype]),
            no_copy=True,
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
                **({} if minibatch_size is None else {"minibatch_size": minibatch_size}),
            )
        if affine:
            x = x * _arg(fn, "a", gpu, layout) + _arg(fn, "b", gpu, layout)
        if noise:
            z = fn.external_source(name="z", device=place, layout=layout, no_copy=True)
            x = x + z * _arg(fn, "s", gpu, layout)
        return x

    p = pipe()
    p.build()
    return p


def _arg(fn: Any, name: str, gpu: bool, layout: str) -> Any:
    """A per-sample [C, 1, 1] (or [1, 1, C]) coefficient input, moved to the GPU when the
    pipeline is (DALI copies these small host arrays itself)."""
    node = fn.external_source(name=name, layout=layout)
    return node.gpu() if gpu else node
