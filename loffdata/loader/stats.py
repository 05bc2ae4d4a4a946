"""``LoaderStats``: the throughput of a loader's current pass, and how long its consumer waited."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

__all__ = ["LoaderStats"]


@dataclass
class LoaderStats:
    """Throughput of the current iteration, and how long the consumer waited for data.

    ``wait_fraction`` near 0 means the loader keeps up; near 1 means it is the bottleneck.
    """

    batches: int = 0
    samples: int = 0
    bytes: int = 0
    wait_s: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    @property
    def elapsed_s(self) -> float:
        return max(time.perf_counter() - self.started, 1e-9)

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.elapsed_s

    @property
    def bytes_per_s(self) -> float:
        return self.bytes / self.elapsed_s

    @property
    def wait_fraction(self) -> float:
        return min(self.wait_s / self.elapsed_s, 1.0)

    def __str__(self) -> str:
        return (
            f"{self.batches} batches, {self.samples_per_s:,.0f} samples/s, "
            f"{self.bytes_per_s / 1e9:.2f} GB/s, "
            f"waited {self.wait_s:.2f}s ({self.wait_fraction:.0%})"
        )
