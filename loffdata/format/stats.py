"""Streaming per-channel mean and standard deviation of feature maps.

Chan et al.'s parallel update in float64: each batch's mean and sum of squared deviations
are merged into the running ones, so the result is numerically stable and partial results
from several processes (ranks of a distributed extraction) merge exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["ChannelStats"]


@dataclass
class ChannelStats:
    """Running per-channel statistics over all spatial positions of all samples.

    Attributes:
        count: values seen per channel (samples x H x W).
        mean: per-channel mean (float64), empty before the first update.
        m2: per-channel sum of squared deviations from the mean (float64).
    """

    count: int = 0
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    m2: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def update(self, x: np.ndarray, *, channel_axis: int = 1) -> None:
        """Adds a batch (N, C, ...) — or one sample with ``channel_axis=0``."""
        x = np.moveaxis(np.asarray(x, dtype=np.float64), channel_axis, 0)
        x = x.reshape(x.shape[0], -1)
        if x.shape[1] == 0:
            return
        mean = x.mean(axis=1)
        m2 = ((x - mean[:, None]) ** 2).sum(axis=1)
        self.merge(ChannelStats(count=x.shape[1], mean=mean, m2=m2))

    def merge(self, other: ChannelStats) -> None:
        """Merges another partial result into this one."""
        if other.count == 0:
            return
        if self.count == 0:
            self.count, self.mean, self.m2 = other.count, other.mean.copy(), other.m2.copy()
            return
        if other.mean.shape != self.mean.shape:
            raise ValueError(
                f"cannot merge stats of {other.mean.size} and {self.mean.size} channels"
            )
        total = self.count + other.count
        delta = other.mean - self.mean
        self.mean = self.mean + delta * (other.count / total)
        self.m2 = self.m2 + other.m2 + delta**2 * (self.count * other.count / total)
        self.count = total

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation per channel."""
        return np.sqrt(self.m2 / max(self.count, 1))

    def to_dict(self) -> dict:
        return {"count": self.count, "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> ChannelStats:
        mean = np.asarray(d["mean"], dtype=np.float64)
        std = np.asarray(d["std"], dtype=np.float64)
        return cls(count=int(d["count"]), mean=mean, m2=std**2 * int(d["count"]))
