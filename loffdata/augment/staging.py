"""Host-built parameter arrays onto the device without making the host wait.

``torch.as_tensor(numpy_array, device="cuda")`` copies from pageable memory, which blocks the
host until the GPU has finished everything queued before it. The augmentation backends
instead gather every small array a step needs (flip masks, crop grids, coefficients, mixing
partners) into one pinned host buffer and issue a single ``non_blocking`` copy, so a batch
costs one asynchronous copy per step and no host-device synchronisation. On the CPU the
arrays are wrapped without a copy.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["stage"]

_ALIGN = 16  # bytes; every array starts on a boundary good for any dtype


def stage(device: torch.device | str, **arrays: np.ndarray) -> dict[str, torch.Tensor]:
    """The ``arrays`` as tensors on ``device``, each keeping its dtype and shape.

    Args:
        device: the target device.
        **arrays: numpy arrays by name.

    Returns:
        ``{name: tensor}`` on ``device``; on CUDA all of them come from one pinned buffer,
        copied with a single ``non_blocking`` copy.
    """
    device = torch.device(device)
    host = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    if device.type == "cpu":
        return {k: torch.from_numpy(v) for k, v in host.items()}
    offsets, total = {}, 0
    for k, v in host.items():
        offsets[k] = total
        total += -(-v.nbytes // _ALIGN) * _ALIGN
    buf = torch.empty(max(total, 1), dtype=torch.uint8, pin_memory=device.type == "cuda")
    raw = buf.numpy()
    for k, v in host.items():
        raw[offsets[k] : offsets[k] + v.nbytes] = v.reshape(-1).view(np.uint8)
    dev = buf.to(device, non_blocking=True)
    return {k: _view(dev, offsets[k], v) for k, v in host.items()}


def _view(buf: torch.Tensor, offset: int, like: np.ndarray) -> torch.Tensor:
    dtype = torch.from_numpy(like[:0].reshape(-1)).dtype
    return buf[offset : offset + like.nbytes].view(dtype).view(like.shape)
