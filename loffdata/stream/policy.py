"""The ``on_error`` policy: raise, or skip, count, warn, and put stand-ins in the gaps.

One :class:`ErrorPolicy` serves a reading process. The sample reader hands it every error
of a sample or shard (:meth:`ErrorPolicy.skip`); the single-sample and the batch paths fill
the places of skipped samples through the same :class:`StandIns`, so counts never change.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Generic, TypeVar

from loffdata.errors import LoffError

__all__ = ["ON_ERROR", "ErrorPolicy", "StandIns"]

#: The accepted ``on_error`` values.
ON_ERROR = ("raise", "skip")
Slot = TypeVar("Slot")


class ErrorPolicy:
    """Strict (``"raise"``) or lenient (``"skip"``) handling of unreadable samples.

    Attributes:
        mode: ``"raise"`` or ``"skip"``.
        skipped: ``{"samples": n, "errors": k}``: samples skipped and errors met (this process).
    """

    def __init__(self, mode: str = "raise"):
        if mode not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {mode!r}")
        self.mode = mode
        self.skipped = {"samples": 0, "errors": 0}

    @property
    def skipping(self) -> bool:
        return self.mode == "skip"

    def skip(self, err: Exception, *, n: int) -> None:
        """Applies the policy to ``n`` unreadable samples: raise ``err``, or count and warn."""
        if not self.skipping:
            raise err
        self.skipped["samples"] += n
        self.skipped["errors"] += 1
        warnings.warn(f"skipping {n} sample(s): {err}", RuntimeWarning, stacklevel=3)

    def stand_ins(
        self, copy: Callable[[Slot, Slot], None], keep: Callable[[Slot], Slot] | None = None
    ) -> StandIns[Slot]:
        """A :class:`StandIns` for one iteration (``keep`` is only used in skip mode)."""
        return StandIns(copy, keep if self.skipping else None)


class StandIns(Generic[Slot]):
    """Fills the slot of each unreadable sample with a copy of the previous good one, or,
    before the first good one of this process, of the next good one (those slots wait).

    Args:
        copy: ``copy(dst, src)`` makes slot ``dst`` hold what slot ``src`` holds.
        keep: ``keep(slot)`` returns a private copy of a good slot, to stand in for samples
            of later calls after the slot itself has been handed out; ``None`` keeps the
            slot itself.
    """

    def __init__(
        self, copy: Callable[[Slot, Slot], None], keep: Callable[[Slot], Slot] | None = None
    ):
        self.copy, self.keep = copy, keep
        self.last: Slot | None = None
        self.waiting: list[Slot] = []

    def fill(self, slots: list[Slot], ok: list[bool]) -> bool:
        """Fills the failed ones of ``slots`` (in order); returns whether none still waits."""
        good = None
        for slot, fine in zip(slots, ok):
            if fine:
                good = slot
                for w in self.waiting:
                    self.copy(w, slot)
                self.waiting.clear()
            elif good is not None:
                self.copy(slot, good)
            elif self.last is not None:
                self.copy(slot, self.last)
            else:
                self.waiting.append(slot)
        if good is not None:
            self.last = self.keep(good) if self.keep is not None else good
        return not self.waiting

    def finish(self) -> None:
        """Raises if slots still wait for a good sample at the end of the iteration."""
        if self.waiting:
            raise LoffError(
                f"on_error='skip' found no readable sample to stand in for {len(self.waiting)} "
                "unreadable ones"
            )
