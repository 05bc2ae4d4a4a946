"""``LoaderConfig``: everything :class:`~loffdata.loader.LoffLoader` is told, validated once.

It embeds the :class:`~loffdata.stream.streamconfig.StreamConfig` of the dataset the loader reads,
and adds what happens after reading: workers, device, dtype, augmentation. Its defaults are
the loader's defaults (``LoffLoader``'s keyword settings only override them)::

    from loffdata import LoaderConfig, LoffLoader, StreamConfig
    config = LoaderConfig(stream=StreamConfig(batch_size=128, cache_dir="/tmp/shards"),
                          num_workers=8, prefetch_factor=4)
    loader = LoffLoader("s3://bucket/feats/train", config, device="cuda")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from loffdata import defaults
from loffdata.stream.streamconfig import BATCH_DTYPES, StreamConfig, dtype_string
from loffdata.util import check_int

__all__ = ["LoaderConfig", "resolve_augment", "BACKENDS"]

BACKENDS = ("auto", "torch", "dali")


@dataclass(frozen=True)
class LoaderConfig:
    """What a :class:`~loffdata.loader.LoffLoader` reads, where it delivers and how it augments.

    Attributes:
        stream: the dataset's settings: order, batch size, error policy, storage, cache, retry
            (a ``batch_size`` of ``None`` becomes the default, 256; a dict of its fields is
            accepted). Its ``batch_dtype`` is chosen by the loader from ``dtype`` and
            ``device``.
        augment: preset name (``"loffta"``, ``"frofa"``, ``"none"``), a dict or
            :class:`~loffdata.augment.AugmentSpec`, or ``None`` for no augmentation step.
        device: where batches are delivered (``"auto"``: CUDA where available, else the CPU;
            ``"cuda"``, ``"cuda:1"``, ``"cpu"``).
        num_workers: DataLoader worker processes reading shards (0 reads in this process;
            the order is the same for any number).
        views: independently augmented views per sample (the output has
            ``batch_size * views`` rows).
        dtype: dtype of the delivered features (``"float32"``, ``"float16"`` or
            ``"bfloat16"``; a ``torch.dtype`` is accepted).
        backend: augmentation backend, ``"auto"`` (DALI on CUDA when installed), ``"torch"``
            or ``"dali"``.
        return_extras: also deliver the dataset's extra tensors (``BatchWithExtras``).
        prefetch_factor: batches each worker prepares ahead.
        persistent_workers: keep the worker processes, and their warm batch buffers, from
            one complete pass to the next (3-4x faster epochs after the first, here);
            ``LoffLoader.close`` or dropping the loader stops them. Breaking out of a pass or
            an error stops them at once.
        log_every: log the loader's stats every this many batches (``None``: never).
        transfer: how host batches reach a CUDA device: ``"auto"`` (the pin thread),
            ``"pin-thread"`` or ``"register"`` (:mod:`loffdata.loader.transfer`).
    """

    stream: StreamConfig = field(
        default_factory=lambda: StreamConfig(batch_size=defaults.BATCH_SIZE)
    )
    augment: Any = "loffta"
    device: str = defaults.DEVICE
    num_workers: int = defaults.NUM_WORKERS
    views: int = defaults.VIEWS
    dtype: str = "float32"
    backend: str = "auto"
    return_extras: bool = False
    prefetch_factor: int = 2
    persistent_workers: bool = True
    log_every: int | None = None
    transfer: str = defaults.TRANSFER

    def __post_init__(self) -> None:
        if isinstance(self.stream, Mapping):
            object.__setattr__(self, "stream", StreamConfig.from_dict(self.stream))
        if not isinstance(self.stream, StreamConfig):
            raise TypeError(
                "stream must be a StreamConfig or a dict of its fields, "
                f"not {type(self.stream).__name__}"
            )
        if self.stream.batch_size is None:  # LoffLoader delivers batches: the documented default
            object.__setattr__(
                self, "stream", dataclasses.replace(self.stream, batch_size=defaults.BATCH_SIZE)
            )
        dtype = dtype_string(self.dtype)
        if dtype not in BATCH_DTYPES:
            raise ValueError(f"dtype must be one of {BATCH_DTYPES}, got {self.dtype!r}")
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "device", str(self.device))
        check_int(self, "num_workers", 0)
        check_int(self, "views", 1)
        check_int(self, "prefetch_factor", 1)
        if self.log_every is not None:
            check_int(self, "log_every", 1)
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.views != 1 and self.augment in (None, False):
            raise ValueError(
                "views > 1 needs an augmentation (use augment='none' for identical views)"
            )

    def replace(self, **changes: Any) -> LoaderConfig:
        """A copy with loader fields or stream fields (by their names) changed."""
        stream_names = {f.name for f in dataclasses.fields(StreamConfig)}
        own = {k: v for k, v in changes.items() if k not in stream_names}
        stream = {k: v for k, v in changes.items() if k in stream_names}
        if stream:
            own["stream"] = dataclasses.replace(own.get("stream", self.stream), **stream)
        return dataclasses.replace(self, **own)


def resolve_augment(augment: Any, views: int, num_classes: int | None):
    """``augment`` (preset name, dict, AugmentSpec or None) -> AugmentSpec or None."""
    if augment is None or augment is False:
        return None
    from loffdata.augment import AugmentSpec

    if isinstance(augment, str):
        spec = AugmentSpec.preset(augment)
    elif isinstance(augment, Mapping):
        spec = AugmentSpec.from_dict(augment)
    elif isinstance(augment, AugmentSpec):
        spec = augment
    else:
        raise TypeError(
            "augment must be a preset name, dict, AugmentSpec or None, "
            f"not {type(augment).__name__}"
        )
    overrides: dict[str, Any] = {"views": views} if views != 1 else {}
    if spec.mixing and spec.num_classes is None and num_classes is not None:
        overrides["num_classes"] = num_classes
    return spec.replace(**overrides) if overrides else spec
