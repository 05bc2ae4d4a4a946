"""Image batches for the model: decode + eval transform in DataLoader workers.

A bad image becomes a value (its skip reason), not an exception, so one unreadable file
does not kill a worker; the pipeline decides whether to stop or to skip it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from loffdata.extract.extractconfig import ExtractConfig
from loffdata.extract.images import (
    BadImageError,
    ImageRecord,
    decode_image,
    iter_wds_images,
    load_image,
)

__all__ = ["MapImages", "StreamImages", "image_loader"]


class MapImages(torch.utils.data.Dataset):
    """Decodes and transforms ``records[indices[k]]``; errors become values, not exceptions."""

    def __init__(
        self,
        records: list[ImageRecord],
        indices: list[int],
        transform: Callable,
        storage_options: dict,
    ):
        self.records, self.indices, self.transform, self.opts = (
            records,
            indices,
            transform,
            storage_options,
        )

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> tuple[int, torch.Tensor | None, str]:
        i = self.indices[k]
        try:
            return i, self.transform(load_image(self.records[i].path, **self.opts)), ""
        except BadImageError as err:
            return i, None, err.reason


class StreamImages(torch.utils.data.IterableDataset):
    """Streams a WebDataset; yields the wanted indices, split across workers by index."""

    def __init__(self, urls: list[str], indices: list[int], transform: Callable):
        self.urls, self.wanted, self.transform = urls, frozenset(indices), transform

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor | None, str]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        for i, path, data in iter_wds_images(self.urls):
            if i not in self.wanted or i % workers != worker:
                continue
            try:
                if data is None:
                    raise BadImageError(path, "sample has no jpg/jpeg/png/webp member")
                yield i, self.transform(decode_image(data, path)), ""
            except BadImageError as err:
                yield i, None, err.reason


def _collate(batch: list) -> tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]:
    good = [(i, x) for i, x, _ in batch if x is not None]
    bad = [(i, reason) for i, x, reason in batch if x is None]
    images = torch.stack([x for _, x in good]) if good else None
    return [i for i, _ in good], images, bad


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def image_loader(
    dataset: torch.utils.data.Dataset, config: ExtractConfig, device: torch.device
) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=config.batch_size,
        num_workers=config.workers,
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
        worker_init_fn=_worker_init if config.workers else None,
    )
