"""The user-facing :class:`Augmenter`: sample parameters on the host, apply on the device."""

from __future__ import annotations

import importlib
from collections.abc import Sequence

import numpy as np
import torch

from loffdata.augment.ops.shape import finish, prepare_labels
from loffdata.augment.params import Params, sample_params
from loffdata.augment.spec import AugmentSpec

__all__ = ["Augmenter", "BACKENDS", "resolve_backend"]

#: backend name -> "module:class", imported only when chosen.
BACKENDS: dict[str, str] = {
    "torch": "loffdata.augment.torch_backend:TorchBackend",
    "dali": "loffdata.augment.dali_backend:DaliBackend",
}


def resolve_backend(backend: str, device: torch.device) -> str:
    """``"auto"`` -> "dali" on a CUDA device with DALI installed, else "torch"."""
    if backend == "auto":
        if device.type == "cuda" and importlib.util.find_spec("nvidia") is not None:
            from loffdata.augment.dali_backend import dali_available

            return "dali" if dali_available() else "torch"
        return "torch"
    if backend not in BACKENDS:
        raise ValueError(
            f"unknown augmentation backend {backend!r}; choose 'auto' or one of {sorted(BACKENDS)}"
        )
    return backend


class Augmenter:
    """Tensor augmentation of batches of feature maps, deterministic in (seed, epoch, index).

    Args:
        spec: what to do (see :class:`AugmentSpec`).
        backend: "auto", "torch" or "dali".
        device: device the batches live on.
        seed: run seed (the sampler's first key).
        mean: manifest per-channel mean (needed when ``spec.normalize``).
        std: manifest per-channel std (noise scale and normalisation; ones when None).
    """

    def __init__(
        self,
        spec: AugmentSpec,
        *,
        backend: str = "auto",
        device: str | torch.device = "cpu",
        seed: int = 0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        if not isinstance(spec, AugmentSpec):
            raise TypeError(f"spec must be an AugmentSpec, got {type(spec).__name__}")
        if spec.normalize and (mean is None or std is None):
            raise ValueError("spec.normalize needs the manifest's per-channel mean and std")
        self.spec, self.seed, self.device = spec, int(seed), torch.device(device)
        self.backend_name = resolve_backend(backend, self.device)
        module, cls = BACKENDS[self.backend_name].split(":")
        self.backend = getattr(importlib.import_module(module), cls)(spec, mean=mean, std=std)

    def params(
        self, indices: np.ndarray | torch.Tensor, *, epoch: int, shape: tuple[int, int, int]
    ) -> Params:
        """Draw the parameters for a batch (same as :func:`sample_params` with this seed)."""
        return sample_params(self.spec, seed=self.seed, epoch=epoch, indices=indices, shape=shape)

    def __call__(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        indices: np.ndarray | torch.Tensor,
        epoch: int = 0,
    ):
        """Augment a batch: returns ``(x [N*views, C, H', W'], y)``; views of a sample adjacent.

        A spec that changes nothing (:attr:`AugmentSpec.is_identity`) returns ``x`` itself
        (cast to ``out_dtype`` if set) without drawing parameters, on every backend.
        """
        _check_batch(x)
        if self.spec.is_identity:
            return finish(x, x.dtype, self.spec), prepare_labels(y, 1, x.shape[0])
        return self.apply(x, y, self.params(indices, epoch=epoch, shape=tuple(x.shape[1:])))

    def apply(self, x: torch.Tensor, y: torch.Tensor | None, params: Params):
        """Apply already drawn ``params`` to ``x`` (and labels ``y``)."""
        _check_batch(x)
        if x.shape[0] * self.spec.views != params.rows or tuple(x.shape[1:]) != params.in_shape:
            raise ValueError(
                f"params drawn for {params.rows} rows of {params.in_shape}, "
                f"got a batch of shape {tuple(x.shape)} with views={self.spec.views}"
            )
        return self.backend.apply(x, y, params)


def _check_batch(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(
            f"expected a torch tensor [N, C, H, W], got {getattr(x, 'shape', type(x))}"
        )
    if x.dtype not in (torch.float16, torch.float32, torch.bfloat16):
        raise ValueError(f"features must be float16, float32 or bfloat16, got {x.dtype}")
