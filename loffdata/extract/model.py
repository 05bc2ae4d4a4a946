"""The frozen model: timm model and eval transform, feature maps, and a fingerprint of the weights.

Random weights (no ``pretrained``, no ``checkpoint``) are drawn from ``config.seed``, so two
runs, a resumed run and every torchrun rank build the same model; :func:`weights_sha256`
records which weights made a cache. ``pretrained=True`` is checked first
(:func:`check_pretrained`): without a warm cache and without a network it fails in seconds
with what to do instead of a long hub traceback.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from loffdata.errors import LoffError
from loffdata.extract.extractconfig import (
    HUB_HOST,
    ExtractConfig,
    RandomWeightsWarning,
    hub_reachable,
)

__all__ = [
    "build_model",
    "build_transform",
    "check_pretrained",
    "compute_features",
    "weights_sha256",
]


def build_model(config: ExtractConfig) -> torch.nn.Module:
    """Creates the timm model in eval mode; warns when its weights are random."""
    import timm

    if not config.pretrained and not config.checkpoint:
        warnings.warn(
            f"model {config.model!r} has RANDOM weights (no --pretrained, no --checkpoint): "
            "features are only useful for testing",
            RandomWeightsWarning,
            stacklevel=2,
        )
    kwargs = dict(config.model_kwargs)
    if config.img_size:
        kwargs["img_size"] = config.img_size
    create: dict[str, Any] = {"pretrained": config.pretrained}
    if config.checkpoint:  # timm's pretrained path: adapts position embeddings to img_size
        create = {"pretrained": True, "pretrained_cfg_overlay": {"file": str(config.checkpoint)}}
    elif config.pretrained:
        check_pretrained(config.model)
    model = _create(timm, config, create, kwargs)
    if not hasattr(model, "forward_intermediates"):
        raise LoffError(
            f"timm model {config.model!r} has no forward_intermediates(); pick another model"
        )
    return model.eval().requires_grad_(False)


def _create(
    timm: Any, config: ExtractConfig, create: dict[str, Any], kwargs: dict[str, Any]
) -> torch.nn.Module:
    """``timm.create_model``; random weights are drawn from ``config.seed`` (same seed, same
    weights)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        try:
            return timm.create_model(config.model, **create, **kwargs)
        except TypeError as err:  # CNNs take no img_size: they accept any input size
            if "img_size" not in kwargs or "img_size" not in str(err):
                raise
            kwargs.pop("img_size")
            torch.manual_seed(config.seed)
            return timm.create_model(config.model, **create, **kwargs)


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 over the model's state dict (names, dtypes, shapes and bytes, in name order)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _hub_cached(model_name: str) -> bool:
    """Whether the hub weights of ``model_name`` are in the local Hugging Face cache."""
    try:
        import timm.models
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    try:
        cfg = timm.models.get_pretrained_cfg(model_name)
    except RuntimeError:  # an unknown tag: timm.create_model reports it
        return False
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        return False
    files = (
        "open_clip_pytorch_model.bin",
        "model.safetensors",
        "pytorch_model.bin",
        "open_clip_model.safetensors",
    )
    return any(isinstance(try_to_load_from_cache(repo.split("@")[0], f), str) for f in files)


def check_pretrained(model_name: str) -> None:
    """Fails in seconds when the hub weights are neither cached nor downloadable.

    Raises:
        LoffError: saying how to pass a local checkpoint or to warm the cache.
    """
    if _hub_cached(model_name) or hub_reachable():
        return
    raise LoffError(
        f"--pretrained: the weights of {model_name!r} are not in the local Hugging Face cache "
        f"and {HUB_HOST[0]} cannot be reached. Either pass a local state dict with "
        f"--checkpoint PATH (instead of --pretrained), or download the weights once on a machine "
        f"with a network and point HF_HOME at that cache (see docs/troubleshooting.md)"
    )


def build_transform(
    model: torch.nn.Module, config: ExtractConfig
) -> tuple[Callable, dict[str, Any]]:
    """The model's timm eval transform at ``config.img_size``; returns (transform, data config)."""
    import timm.data

    data_cfg = dict(timm.data.resolve_model_data_config(model))
    if config.img_size:
        data_cfg["input_size"] = (3, config.img_size, config.img_size)
    if config.crop_pct:
        data_cfg["crop_pct"] = config.crop_pct
    return timm.data.create_transform(**data_cfg, is_training=False), data_cfg


def compute_features(
    model: torch.nn.Module,
    x: torch.Tensor,
    *,
    layer: int = -1,
    norm: bool = False,
    pooled: bool = False,
    pool: int = 1,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Spatial feature map (N, C, H, W) of block/stage ``layer`` and optional pooled vector.

    ViTs drop prefix (CLS/register) tokens and reshape patch tokens to the grid; CNNs give
    the stage output. ``pool > 1`` average-pools the map (``F.avg_pool2d``, floor mode).
    """
    kw: dict[str, Any] = {"indices": [layer], "output_fmt": "NCHW"}
    if norm:
        kw["norm"] = True
    vec = None
    if pooled:
        final, inter = model.forward_intermediates(x, **kw)
        vec = model.forward_head(final, pre_logits=True)
    else:
        inter = model.forward_intermediates(x, intermediates_only=True, **kw)
    feat = inter[0]
    if pool > 1:
        feat = F.avg_pool2d(feat, pool)
    return feat, vec
