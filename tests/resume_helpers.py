"""One shared check for resumable iterables: stop at step k, resume, get exactly the rest.

Works with anything that is iterable and follows the ``state_dict()`` /
``load_state_dict()`` protocol (datasets, loaders), or with adapters given as callables.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from itertools import islice
from typing import Any

__all__ = ["item_key", "collect", "resume_after", "assert_resumes_exactly"]


def item_key(item: Any) -> Any:
    """A comparable identity of one item: its global index (ints, or a tuple for a batch)."""
    if isinstance(item, dict) and "index" in item:
        index = item["index"]
        return (
            tuple(index.tolist())
            if hasattr(index, "tolist") and getattr(index, "ndim", 0)
            else int(index)
        )
    return item


def collect(
    iterable: Iterable[Any], key: Callable[[Any], Any] = item_key, limit: int | None = None
) -> list[Any]:
    """Keys of the first ``limit`` items (all when ``None``)."""
    return [key(x) for x in islice(iter(iterable), limit)]


def _default_state(obj: Any, k: int) -> dict:
    return obj.state_dict()


def _default_load(obj: Any, state: dict) -> None:
    obj.load_state_dict(state)


def resume_after(
    make: Callable[[], Iterable[Any]],
    k: int,
    *,
    key: Callable[[Any], Any] = item_key,
    make_resumed: Callable[[], Iterable[Any]] | None = None,
    state_of: Callable[[Any, int], dict] = _default_state,
    load: Callable[[Any, dict], None] = _default_load,
) -> tuple[list[Any], list[Any]]:
    """Takes ``k`` items from a fresh ``make()``, saves its state, resumes a new object.

    Args:
        make: builds a fresh iterable at the start of the epoch.
        k: items to take before stopping.
        key: identity of an item.
        make_resumed: builds the object to resume into (default ``make``), e.g. with a
            different number of workers.
        state_of: ``(obj, k) -> state`` after ``k`` items (default ``obj.state_dict()``).
        load: ``(obj, state)`` loads the state (default ``obj.load_state_dict(state)``).

    Returns:
        ``(head, tail)``: keys of the ``k`` items taken and of everything after resuming.
    """
    obj = make()
    it = iter(obj)
    head = [key(x) for x in islice(it, k)]
    state = state_of(obj, k)
    del it  # stop the first iteration (shuts DataLoader workers down)
    resumed = (make_resumed or make)()
    load(resumed, state)
    return head, collect(resumed, key)


def assert_resumes_exactly(
    make: Callable[[], Iterable[Any]],
    stops: Sequence[int],
    *,
    same_order: bool = True,
    full: list[Any] | None = None,
    **kwargs: Any,
) -> list[Any]:
    """Checks that stopping at each of ``stops`` and resuming yields exactly the rest.

    With ``same_order`` the concatenation must equal the uninterrupted sequence; without,
    the resumed part must hold exactly the remaining items (as a multiset), in any order.
    Keyword arguments go to :func:`resume_after`. Returns the uninterrupted sequence.
    """
    full = collect(make(), kwargs.get("key", item_key)) if full is None else full
    for k in stops:
        head, tail = resume_after(make, k, **kwargs)
        assert head == full[:k], f"stop at {k}: the first items differ from the uninterrupted run"
        if same_order:
            assert tail == full[k:], (
                f"stop at {k}: resumed items differ from the uninterrupted rest"
            )
        else:
            assert Counter(_flat(tail)) == Counter(_flat(full[k:])), (
                f"stop at {k}: resumed items are not exactly the rest"
            )
    return full


def _flat(keys: list[Any]) -> list[Any]:
    return [i for k in keys for i in (k if isinstance(k, tuple) else (k,))]
