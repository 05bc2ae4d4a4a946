"""DALI backend: the heavy per-element steps in one DALI pipeline, the rest in torch.

Runs on the GPU (``external_source(device="gpu")`` fed torch CUDA tensors) or, without
a GPU, in DALI's CPU-only mode (``device_id=None``, fed numpy views), which is how the
tests check it against the torch backend. DALI is imported lazily, on first use.

The registry's steps (:data:`loffdata.augment.registry.STEPS`) run in their order, as on
the torch backend; consecutive steps with a DALI implementation (``Step.dali``) that the
batch needs run as one pipeline, the others (``Step.dali is None``: torch only) in torch
between pipelines. With the ops of today:

==========================================  =========================================
step                                        DALI backend
==========================================  =========================================
pooling, repeat per view                    torch, before the pipeline (DALI has no pooling op)
float16 -> float32 cast                     DALI ``fn.cast`` (resize/arithmetic refuse fp16;
                                            bfloat16 is cast by torch first)
random resized crop + flips                 DALI ``fn.resize(roi_start, roi_end,
                                            antialias=False)``; a reversed ROI flips
jitter, noise, normalise, channel dropout   DALI arithmetic ``x * A + B + z * S``; the
                                            noise field ``z`` is drawn by torch on the
                                            device and fed as an input
cutout                                      DALI ``fn.erase``
rot90, mixup/cutmix, final cast             torch, after the pipeline (no DALI op)
==========================================  =========================================

A pipeline is built once per (spec, sample shape, dtype, device, which steps this batch
needs) and kept in a small LRU cache on the backend object (``max_pipelines``, default 8).
The batch size is not part of the key: a pipeline is built for the largest batch seen and
runs smaller ones (the last partial batch of an epoch) as they are, with no second build.

On the GPU nothing makes the host wait: the big inputs (the maps, the noise field) are
fed without a copy (``no_copy``) on torch's current stream, the pipeline is run with that
stream (``pipe.run(stream)``: outputs bound to it, not host-synchronous), and its output
reaches torch through DLPack on the same stream (no output copy). ``output="copy"``
instead copies it into a fresh torch tensor with ``feed_ndarray`` (the fallback).

Wide maps: ``fn.resize`` treats each channel of a CHW map as a frame of its own (a 256 x
1024x32x32 batch is 262,144 frames), and HWC needs two permute copies and fails past 32
float32 channels in ``fn.flip``. So the resize step (crop + flips) follows one rule,
``resize="auto"``: maps with more than :data:`WIDE_CHANNELS` channels are resized by torch
(one batched ``grid_sample``, exactly the torch backend's step) before the pipeline, which
then does the per-element steps; narrower maps are resized by DALI. ``resize="dali"`` /
``"torch"`` force one; ``minibatch_size`` and ``layout="HWC"`` remain for ``gpu-check``
to measure (its ``resize`` table confirms or corrects the threshold).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from loffdata.augment.opkit import Params, Step, StepContext
from loffdata.augment.registry import STEPS
from loffdata.augment.spec import AugmentSpec
from loffdata.augment.torch_backend import TorchBackend

__all__ = ["DaliBackend", "dali_available", "WIDE_CHANNELS", "RESIZES"]

#: above this many channels ``resize="auto"`` resizes with torch (see the module docstring)
WIDE_CHANNELS = 32
#: where the resize step may run
RESIZES = ("auto", "dali", "torch")

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
        resize: where crop + flips run: ``"auto"`` (torch above :data:`WIDE_CHANNELS`
            channels, else DALI), ``"dali"`` or ``"torch"``.
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
        resize: str = "auto",
    ) -> None:
        if not dali_available():
            raise ImportError(
                "the DALI backend needs nvidia-dali (pip install nvidia-dali-cuda120)"
            )
        if (
            layout not in ("CHW", "HWC")
            or output not in ("dlpack", "copy")
            or max_pipelines < 1
            or resize not in RESIZES
        ):
            raise ValueError(
                "need layout 'CHW' or 'HWC', output 'dlpack' or 'copy', max_pipelines >= 1, "
                f"resize in {RESIZES}; got {layout!r}, {output!r}, {max_pipelines}, {resize!r}"
            )
        super().__init__(spec, mean=mean, std=std)
        self.num_threads = num_threads or min(4, os.cpu_count() or 1)
        self.max_pipelines, self.minibatch_size = max_pipelines, minibatch_size
        self.layout, self.output, self.resize = layout, output, resize
        self._pipes: OrderedDict[tuple, tuple[Any, int]] = (
            OrderedDict()
        )  # key -> (pipeline, batch size)

    def resizes_in_torch(self, channels: int) -> bool:
        """Whether the resize step of maps with ``channels`` channels runs in torch."""
        return self.resize == "torch" or (self.resize == "auto" and channels > WIDE_CHANNELS)

    def per_channel(self, a: np.ndarray) -> np.ndarray:
        """Per-row [R, C] coefficients as per-sample [C, 1, 1] (or [1, 1, C]) inputs."""
        return a[:, None, None, :] if self.layout == "HWC" else a[:, :, None, None]

    def in_layout(self, z: torch.Tensor) -> torch.Tensor:
        """A [R, C, H, W] input in the pipeline's layout."""
        return z.permute(0, 2, 3, 1).contiguous() if self.layout == "HWC" else z

    def apply(self, x: torch.Tensor, y: torch.Tensor | None, params: Params):
        """Augment ``x`` [N, C, H, W] (and labels ``y`` [N]) with ``params``.

        The registry's steps run in their order; consecutive steps with a DALI
        implementation that this batch needs run as one pipeline, the others in torch."""
        ctx = self.context(x, params)
        segment: list[tuple[Step, Any]] = []
        for step in STEPS:
            variant = None if step.dali is None else step.dali.plan(x, ctx)
            if variant is not None:
                segment.append((step, variant))
                continue
            x, segment = self._run(x, ctx, segment), []
            x, y = step.torch(x, y, ctx)
        return self._run(x, ctx, segment), y

    def _run(self, x: torch.Tensor, ctx: StepContext, segment: list) -> torch.Tensor:
        """The pipeline of ``segment``'s steps on ``x`` (float32 out); ``x`` when empty."""
        if not segment:
            return x
        x = x if x.dtype in _DALI_DTYPES else x.float()
        x = self.in_layout(x).contiguous()
        variants = tuple((step.name, variant) for step, variant in segment)
        key = (tuple(x.shape[1:]), x.dtype, str(x.device), variants, ctx.params.out_hw)
        pipe = self._pipeline(key, x.shape[0], segment)
        feeds = {"x": x}
        for step, variant in segment:
            feeds.update(step.dali.feeds(x, ctx, variant))
        for name, value in feeds.items():
            _feed(pipe, name, value, x.device)
        stream = torch.cuda.current_stream(x.device) if x.is_cuda else None
        (out,) = pipe.run(stream.cuda_stream) if stream is not None else pipe.run()
        res = _to_torch(out, x.device, copy=self.output == "copy")
        return res.permute(0, 3, 1, 2).contiguous() if self.layout == "HWC" else res

    def _pipeline(self, key: tuple, rows: int, segment: list) -> Any:
        """The cached pipeline of ``key`` for ``rows`` samples: built on a miss or for a batch
        larger than it was built for; smaller batches run on it. The oldest dropped past the
        bound."""
        pipe, size = self._pipes.get(key, (None, 0))
        if pipe is None or rows > size:
            graph = _Graph(key, self.layout, self.minibatch_size)
            pipe, size = _build(graph, segment, batch_size=rows, num_threads=self.num_threads), rows
            self._pipes[key] = (pipe, size)
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


class _Graph:
    """What a step's DALI graph function sees: ``fn``, ``types``, where and how it runs."""

    def __init__(self, key: tuple, layout: str, minibatch_size: int | None) -> None:
        from nvidia.dali import fn, types

        self.fn, self.types, self.layout = fn, types, layout
        self.dtype, self.out_hw = key[1], key[4]
        self.device = torch.device(key[2])
        self.gpu = self.device.type == "cuda"
        self.place = "gpu" if self.gpu else "cpu"
        self.resize_options = {} if minibatch_size is None else {"minibatch_size": minibatch_size}

    def source(self, name: str, **kwargs: Any) -> Any:
        """An external source fed as ``name`` (host-side unless ``device`` says otherwise)."""
        return self.fn.external_source(name=name, **kwargs)

    def arg(self, name: str) -> Any:
        """A per-sample [C, 1, 1] (or [1, 1, C]) coefficient input, moved to the GPU when the
        pipeline is (DALI copies these small host arrays itself)."""
        node = self.fn.external_source(name=name, layout=self.layout)
        return node.gpu() if self.gpu else node

    def device_id(self) -> int | None:
        """The pipeline's ``device_id``: the CUDA device, or ``None`` (CPU-only mode)."""
        if not self.gpu:
            return None
        return torch.cuda.current_device() if self.device.index is None else self.device.index


def _build(g: _Graph, segment: list, *, batch_size: int, num_threads: int) -> Any:
    """Build the pipeline of ``segment``'s steps, for batches of up to ``batch_size``."""
    from nvidia.dali import pipeline_def

    types = g.types

    @pipeline_def(
        batch_size=batch_size,
        num_threads=num_threads,
        device_id=g.device_id(),
        prefetch_queue_depth=1,
    )
    def pipe():
        dtype = getattr(types, _DALI_DTYPES[g.dtype])
        x = g.source("x", device=g.place, layout=g.layout, dtype=dtype, no_copy=True)
        x = g.fn.cast(x, dtype=types.FLOAT) if g.dtype == torch.float16 else x
        for step, variant in segment:
            x = step.dali.graph(x, variant, g)
        return x

    p = pipe()
    p.build()
    return p
