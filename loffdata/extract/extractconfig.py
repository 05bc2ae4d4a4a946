"""What one extraction run needs: :class:`ExtractConfig` (also the flags of ``tools/shard.py``).

Light on purpose (no torch, no timm): ``tools/shard.py --help`` and its flag checks import
only this module. :func:`check_paths` checks local inputs before any work starts.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from typing import Any

from loffdata import defaults
from loffdata.errors import LoffError
from loffdata.format.names import check_destination, check_prefix
from loffdata.util import check_int, is_local

__all__ = [
    "CONFIG_NAME",
    "DTYPES",
    "HUB_HOST",
    "SOURCES",
    "ExtractConfig",
    "RandomWeightsWarning",
    "check_paths",
    "hub_reachable",
]

CONFIG_NAME = "extract_config.json"
DTYPES = ("float16", "bfloat16", "float32", "int8")
SOURCES = ("auto", "folder", "csv", "wds", "shapes")
HUB_HOST = ("huggingface.co", 443)


class RandomWeightsWarning(UserWarning):
    """The model has random weights (neither ``pretrained`` nor ``checkpoint`` given)."""


@dataclass
class ExtractConfig:
    """Everything one extraction run needs; written to ``<out>/extract_config.json``.

    Attributes:
        out: output directory or fsspec URL; each split goes to ``<out>/<split>``.
        input: image folder, CSV file, WebDataset URL(s) (or ``{split: urls}``), or
            ``None`` for the embedded ``shapes`` dataset.
        source: input kind: ``auto``, ``folder``, ``csv``, ``wds`` or ``shapes``.
        classes: class names of an input with integer labels (WebDataset ``cls``, a CSV of
            numbers): a file (JSON list or ``{label: name}`` mapping, or one name per line)
            or comma-separated names; ``None``: the label values (``0``, ``1`` ...). A
            folder's or named CSV labels' classes come from the input.
        model: any timm model name.
        pretrained: load the hub weights (needs a network or a warm cache).
        checkpoint: local weights file (a state dict), loaded through timm's pretrained
            path (``pretrained_cfg_overlay=dict(file=...)``), so ViT position embeddings
            are resampled to ``img_size`` as for hub weights.
        model_kwargs: extra ``timm.create_model`` keyword arguments.
        img_size: input resolution (square); ``None``: the model's own (112 for ``shapes``).
            ViTs are created at this size (position embeddings resampled).
        crop_pct: overrides the eval transform's centre-crop fraction (``1.0``: no crop).
        layer: block (ViT) or stage (CNN) whose output is stored; negative counts from the end.
        norm: apply the model's final norm to the stored map (``forward_intermediates(norm=)``).
        pooled: also store the pre-logits vector (``forward_head(pre_logits=True)``: CLS token
            or global pool after the final norm) as extra tensor ``pooled``.
        pool: average-pool the map by this integer factor before writing.
        dtype: storage dtype: ``float16``, ``bfloat16``, ``float32`` or ``int8``.
        shard_size: images per shard (the unit of resumption).
        prefix: shard file name prefix.
        batch_size: images per forward pass.
        workers: DataLoader worker processes for decoding and preprocessing; ``None``:
            half the CPU cores, 1 to 8 (the other half runs inference on CPU).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        amp: bf16 autocast (and channels_last) on CUDA.
        skip_bad: skip unreadable images and list them in the manifest instead of failing.
        overwrite: delete an existing output whose configuration differs, instead of failing.
        storage_options: fsspec options for the output (and folder/CSV inputs).
        endpoint_url: S3 endpoint shortcut (``client_kwargs.endpoint_url``).
        shapes_counts: images per split of the ``shapes`` dataset, e.g.
            ``{train: 200, val: 50}``.
        seed: seed of the ``shapes`` dataset and of random model weights (the same seed
            gives the same weights, so reruns and ranks agree).
        progress: show a progress bar (rank 0).
        teacher: store a teacher's logits as the ``logits`` extra: a timm classifier name or
            ``self`` (the feature model's head); ``None``: none (:mod:`loffdata.extract.teacher`).
        teacher_topk: logits kept per target, top-k compressed (``None``: all).
        teacher_views: teacher targets per image: the image, then image-space augmentations.
    """

    out: str = "out/demo"
    input: Any = None
    source: str = "auto"
    classes: Any = None
    model: str = "vit_tiny_patch16_224"
    pretrained: bool = False
    checkpoint: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    img_size: int | None = None
    crop_pct: float | None = None
    layer: int = -1
    norm: bool = False
    pooled: bool = False
    pool: int = 1
    dtype: str = "float16"
    shard_size: int = 256
    prefix: str = "shard"
    batch_size: int = 64
    workers: int | None = None
    device: str = defaults.DEVICE
    amp: bool = True
    skip_bad: bool = False
    overwrite: bool = False
    storage_options: dict[str, Any] = field(default_factory=dict)
    endpoint_url: str | None = None
    shapes_counts: dict[str, int] = field(default_factory=lambda: {"train": 1000, "val": 200})
    seed: int = 0
    progress: bool = True
    teacher: str | None = None
    teacher_topk: int | None = 10
    teacher_views: int = 1

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        if self.device != "auto" and not re.fullmatch(r"cpu|cuda(:\d+)?", str(self.device)):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        for name in ("pool", "shard_size", "batch_size"):
            check_int(self, name, 1)
        check_prefix(self.prefix)
        if isinstance(self.input, (str, os.PathLike)) and os.fspath(self.input) not in SOURCES:
            check_destination(
                os.fspath(self.input), self.out, both_ways=self.overwrite
            )  # inputs stay unharmed
        if self.workers is None:
            self.workers = max(1, min(8, (os.cpu_count() or 2) // 2))
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")

    def fs_options(self) -> dict[str, Any]:
        """fsspec storage options with ``endpoint_url`` folded in."""
        opts = dict(self.storage_options)
        if self.endpoint_url:
            opts.setdefault("client_kwargs", {})["endpoint_url"] = self.endpoint_url
        return opts


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers (never, with ``HF_HUB_OFFLINE=1``)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        return False
    try:
        socket.create_connection(HUB_HOST, timeout=timeout).close()
        return True
    except OSError:
        return False


def _hub_cache_may_hold(model: str) -> bool:
    """Whether the local hub cache has a timm repo for ``model`` (a loose check; model.py checks
    exactly)."""
    home = os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface"))
    cache = os.environ.get("HF_HUB_CACHE", os.path.join(home, "hub"))
    base = model.split(".", 1)[0]
    return os.path.isdir(cache) and any(
        n.startswith(f"models--timm--{base}") for n in os.listdir(cache)
    )


def check_paths(config: ExtractConfig) -> None:
    """Refuses what would fail later: a missing local ``input``/``checkpoint``, unreachable hub
    weights.

    Light (no torch, no timm), so the CLI answers in about a second.

    Raises:
        LoffError: ``--input PATH: no such file or directory`` (and the same for ``--checkpoint``);
            ``--pretrained`` with neither a cached copy nor a network, saying what to do.
    """
    checks = {"checkpoint": config.checkpoint}
    if (
        isinstance(config.input, (str, os.PathLike))
        and "{" not in str(config.input)
        and config.input != "shapes"
    ):
        checks["input"] = config.input
    if (
        config.pretrained
        and not config.checkpoint
        and not _hub_cache_may_hold(config.model)
        and not hub_reachable()
    ):
        raise LoffError(
            f"--pretrained: the weights of {config.model!r} are not in the local Hugging Face "
            "cache and "
            f"{HUB_HOST[0]} cannot be reached. Either pass a local state dict with --checkpoint "
            "PATH "
            "(instead of --pretrained), or download the weights once on a machine with a network "
            "and point "
            "HF_HOME at that cache (see docs/troubleshooting.md)"
        )
    for flag, value in checks.items():
        text = os.fspath(value) if value is not None else None
        if text and is_local(text) and not os.path.exists(text.removeprefix("file://")):
            raise LoffError(f"--{flag} {text}: no such file or directory")
