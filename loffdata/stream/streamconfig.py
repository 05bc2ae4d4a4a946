"""``StreamConfig``: everything that decides what a :class:`StreamingDataset` reads and yields.

One frozen dataclass, declared once and embedded where it is used: by
:class:`~loffdata.stream.dataset.StreamingDataset`, inside
:class:`~loffdata.loader.loaderconfig.LoaderConfig` (so inside
:class:`~loffdata.loader.LoffLoader`) and inside :class:`~loffdata.train.trainer.TrainConfig`.
The order fields come from :class:`~loffdata.stream.plan.PlanConfig` (a ``StreamConfig`` is
one), the retry policy is a :class:`~loffdata.storage.retry.RetryConfig`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from loffdata.storage.cache import CacheConfig
from loffdata.storage.prefetch.by_shard import PrefetchConfig
from loffdata.storage.retry import RetryConfig
from loffdata.stream.plan import PlanConfig
from loffdata.util import UNSET, merge

__all__ = ["StreamConfig", "ON_ERROR", "BATCH_DTYPES", "dtype_string"]

ON_ERROR = ("raise", "skip")
BATCH_DTYPES = ("float32", "float16", "bfloat16")


def dtype_string(dtype: Any) -> str:
    """``"float16"`` for ``torch.float16``, ``np.float16``, ``"torch.float16"`` or ``"float16"``."""
    text = str(getattr(dtype, "name", dtype) if not isinstance(dtype, str) else dtype)
    return text.removeprefix("torch.")


@dataclass(frozen=True)
class StreamConfig(PlanConfig):
    """What a streaming dataset reads and how it hands samples out.

    The order fields (``seed``, ``shuffle``, ``shuffle_buffer``, ``partial``, ``drop_last``)
    are those of :class:`~loffdata.stream.plan.PlanConfig`.

    Attributes:
        seed: base seed of the shard and sample order.
        shuffle: shuffle shards and samples; ``False`` keeps manifest order.
        shuffle_buffer: samples per shuffle window (on remote shards also how many samples a
            worker holds; local shards are read by random access, a batch at a time).
        partial: ``"pad"`` or ``"drop"``: how ranks are equalised (see :mod:`loffdata.stream.plan`).
        drop_last: drop each rank's final partial batch.
        batch_size: yield batches of this many samples, assembled in shared memory; ``None``
            yields single samples.
        batch_dtype: dtype of the batched features (``"float32"``, ``"float16"``,
            ``"bfloat16"``; a ``torch.dtype`` is accepted), converted (and int8 dequantised)
            while the batch is assembled; ``None`` keeps the storage dtype (and int8 values
            with a ``scale``).
        on_error: ``"raise"`` (strict) or ``"skip"`` (bad samples are replaced, counted and
            reported with :func:`warnings.warn`).
        storage_options: passed to fsspec (``endpoint_url``, ``anon``, ``key``/``secret`` ...).
        cache_dir: cache remote shards in this local directory (``None``: no cache).
        cache_limit_bytes: byte budget of the cache (``None``: unbounded).
        retry: timeouts and retries of remote reads (a dict of its fields is accepted).
        prefetch: how many ranged requests remote reads keep in flight per reading process,
            within what byte budget
            (:class:`~loffdata.storage.prefetch.by_shard.PrefetchConfig`; a dict of its fields
            is accepted; ``requests=0`` turns prefetch off).
    """

    batch_size: int | None = None
    batch_dtype: str | None = None
    on_error: str = "raise"
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    cache_dir: str | None = None
    cache_limit_bytes: int | None = None
    retry: RetryConfig = field(default_factory=RetryConfig)
    prefetch: PrefetchConfig = field(default_factory=PrefetchConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {self.on_error!r}")
        if self.batch_size is not None and (
            isinstance(self.batch_size, bool) or int(self.batch_size) < 1
        ):
            raise ValueError(f"batch_size must be >= 1 or None, got {self.batch_size!r}")
        if self.batch_dtype is not None:
            name = dtype_string(self.batch_dtype)
            if name not in BATCH_DTYPES:
                raise ValueError(
                    f"batch_dtype must be None or one of {BATCH_DTYPES}, got {self.batch_dtype!r}"
                )
            object.__setattr__(self, "batch_dtype", name)
        if self.cache_limit_bytes is not None and self.cache_limit_bytes < 0:
            raise ValueError(
                f"cache_limit_bytes must be >= 0 or None, got {self.cache_limit_bytes}"
            )
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", os.fspath(self.cache_dir))
        if not isinstance(self.storage_options, Mapping):
            raise TypeError(
                f"storage_options must be a mapping, not {type(self.storage_options).__name__}"
            )
        object.__setattr__(self, "storage_options", dict(self.storage_options))
        if isinstance(self.retry, Mapping):
            object.__setattr__(self, "retry", RetryConfig(**self.retry))
        elif not isinstance(self.retry, RetryConfig):
            raise TypeError(
                "retry must be a RetryConfig or a dict of its fields, not "
                f"{type(self.retry).__name__}"
            )
        if isinstance(self.prefetch, Mapping):
            object.__setattr__(self, "prefetch", PrefetchConfig(**self.prefetch))
        elif not isinstance(self.prefetch, PrefetchConfig):
            raise TypeError(
                "prefetch must be a PrefetchConfig or a dict of its fields, not "
                f"{type(self.prefetch).__name__}"
            )

    @property
    def plan(self) -> PlanConfig:
        """The order part alone."""
        return PlanConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(PlanConfig)})

    @property
    def cache(self) -> CacheConfig | None:
        """The shard cache, or ``None`` without ``cache_dir``."""
        return (
            None if self.cache_dir is None else CacheConfig(self.cache_dir, self.cache_limit_bytes)
        )

    @classmethod
    def with_settings(cls, config: StreamConfig | None, **given: Any) -> StreamConfig:
        """``config`` (defaults if ``None``) with the keyword settings given (not
        :data:`~loffdata.util.UNSET`) replaced; ``None`` for ``storage_options``, ``retry`` or
        ``prefetch`` means their defaults."""
        if given.get("storage_options", UNSET) is None:
            given["storage_options"] = {}
        if given.get("retry", UNSET) is None:
            given["retry"] = RetryConfig()
        if given.get("prefetch", UNSET) is None:
            given["prefetch"] = PrefetchConfig()
        return merge(config or cls(), **given)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> StreamConfig:
        """From a mapping of field names (a config file); unknown names are a ``ValueError``."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown stream setting(s) {unknown}; known: {sorted(known)}")
        return cls(**values)
