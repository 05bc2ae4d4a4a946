"""Every CUDA call of the loader goes through a :class:`Gpu`: CUDA itself, or a strict stand-in.

:class:`CudaGpu` forwards to ``torch.cuda``. :class:`StandInCuda` runs on the CPU and enforces
the rules a CUDA device would (so that the GPU path runs, and fails where it would fail, in
the ordinary test suite on a machine without a GPU):

- a copy issued on a side stream has not happened until a stream that uses it waits on an
  event recorded after it (until then the destination holds poison: NaN, -99);
- ``record_stream`` refuses host tensors (``aten::record_stream`` has no CPU kernel);
- ``non_blocking`` copies refuse sources that are neither pinned nor registered;
- ``host_register`` / ``host_unregister`` return CUDA's codes, must balance, and refuse to
  unregister memory a queued copy still reads; an error code stays set until
  :meth:`Gpu.last_error` clears it, and the next copy fails while it is set;
- host syncs are counted: :meth:`Gpu.synchronize`, and ``item``/``cpu``/``tolist``/``numpy``/
  ``bool``/``int``/``float`` of a tensor on the device (:attr:`StandInCuda.syncs`; ``.to("cpu")``
  is not counted: the stand-in's tensors are computed on the CPU, so ``.to(x.device)`` reads
  the same).

Tensors "on" the stand-in are CPU tensors of the subclass :class:`OnDevice`, which results of
operations on them inherit.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch

__all__ = ["Gpu", "CudaGpu", "StandInCuda", "OnDevice", "as_gpu"]

#: CUDA error codes the loader meets
ERR_ALLOC, ERR_ALREADY_REGISTERED, ERR_NOT_REGISTERED = 2, 712, 713


class Gpu:
    """What the loader asks of a CUDA device (see :class:`CudaGpu` for the meaning of each)."""

    #: torch device the delivered tensors are computed on
    compute: torch.device
    #: whether DataLoader's pin thread can pin batches (it needs real CUDA)
    pin_thread: bool = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.compute})"


class CudaGpu(Gpu):
    """A real CUDA device, through ``torch.cuda``."""

    pin_thread = True

    def __init__(self, device: torch.device):
        self.compute, self.syncs = torch.device(device), 0

    def make_current(self) -> None:
        if self.compute.index is not None:
            torch.cuda.set_device(self.compute)

    def stream(self) -> Any:
        return torch.cuda.Stream(self.compute)

    def current_stream(self) -> Any:
        return torch.cuda.current_stream(self.compute)

    def use(self, stream: Any) -> contextlib.AbstractContextManager:
        return torch.cuda.stream(stream)

    def event(self) -> Any:
        return torch.cuda.Event()

    def record(self, event: Any, stream: Any) -> None:
        event.record(stream)

    def wait(self, stream: Any, event: Any) -> None:
        stream.wait_event(event)

    def query(self, event: Any) -> bool:
        return bool(event.query())

    def synchronize(self) -> None:
        self.syncs += 1
        torch.cuda.synchronize(self.compute)

    def pin(self, t: torch.Tensor) -> torch.Tensor:
        return t.pin_memory()

    def is_pinned(self, t: torch.Tensor) -> bool:
        return t.is_pinned()

    def copy(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.compute, non_blocking=True)

    def record_stream(self, t: torch.Tensor, stream: Any) -> None:
        t.record_stream(stream)

    def can_register(self) -> bool:
        return torch.cuda.is_available() and hasattr(torch.cuda.cudart(), "cudaHostRegister")

    def host_register(self, ptr: int, size: int) -> int:
        return _code(torch.cuda.cudart().cudaHostRegister(ptr, size, 0))

    def host_unregister(self, ptr: int) -> int:
        return _code(torch.cuda.cudart().cudaHostUnregister(ptr))

    def last_error(self) -> int:
        """Reads and clears CUDA's error state (``cudaGetLastError``); -1 if it cannot."""
        fn = getattr(torch.cuda.cudart(), "cudaGetLastError", None) or _libcudart_get_last_error()
        return -1 if fn is None else _code(fn())


def _code(err: Any) -> int:
    return int(getattr(err, "value", err))


def _libcudart_get_last_error() -> Callable[[], int] | None:
    """``cudaGetLastError`` of the CUDA runtime torch loaded (torch does not bind it)."""
    import ctypes

    for name in ("libcudart.so", "libcudart.so.13", "libcudart.so.12"):
        with contextlib.suppress(OSError, AttributeError):
            return ctypes.CDLL(name).cudaGetLastError
    return None


class OnDevice(torch.Tensor):
    """A CPU tensor standing for one on the :class:`StandInCuda` device; reading it from the
    host (``item``, ``cpu``, ...) counts as a host sync."""

    #: read by code that must not read device tensors back (e.g. the torch backend's label check)
    loffdata_on_device = True

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _HOST_READS:
            _SYNCS[0] += 1
            with torch._C.DisableTorchFunctionSubclass():
                out = func(*args, **kwargs)
                return (
                    out.as_subclass(torch.Tensor).clone() if isinstance(out, torch.Tensor) else out
                )
        return super().__torch_function__(func, types, args, kwargs)


_HOST_READS = {
    torch.Tensor.item,
    torch.Tensor.cpu,
    torch.Tensor.tolist,
    torch.Tensor.numpy,
    torch.Tensor.__bool__,
    torch.Tensor.__int__,
    torch.Tensor.__float__,
}
_SYNCS = [0]  # host reads of OnDevice tensors, in this process


class _Stream:
    """A queue of work; the default stream of the stand-in runs work at once (eager)."""

    def __init__(self, eager: bool):
        self.eager, self.ops, self.done = eager, [], 0

    def enqueue(self, op: Callable[[], None], reads: tuple[int, int] | None = None) -> None:
        self.ops.append((op, reads))
        if self.eager:
            self.run(len(self.ops))

    def run(self, upto: int) -> None:
        while self.done < upto:
            op, _ = self.ops[self.done]
            self.ops[self.done] = (None, None)
            self.done += 1
            op()

    def pending_reads(self) -> list[tuple[int, int]]:
        return [r for _, r in self.ops[self.done :] if r is not None]


class _Event:
    def __init__(self) -> None:
        self.stream, self.pos = None, 0


class StandInCuda(Gpu):
    """A strict CPU stand-in for a CUDA device (see the module docstring for its rules).

    Args:
        fail_register: how many of the next ``host_register`` calls fail
        (cudaErrorMemoryAllocation).
    """

    def __init__(self, *, fail_register: int = 0):
        self.compute = torch.device("cpu")
        self.fail_register = fail_register
        self.registered: dict[int, int] = {}  # ptr -> bytes
        self.register_calls = self.unregister_calls = 0
        self._error, self._syncs, self._reads0 = 0, 0, _SYNCS[0]
        self._default = _Stream(eager=True)
        self._current = self._default
        self._streams: weakref.WeakSet = weakref.WeakSet()
        self._pinned: dict[
            int, weakref.ref
        ] = {}  # id -> the pinned tensor (tensors compare by value)

    @property
    def syncs(self) -> int:
        """Host syncs so far: synchronize calls and host reads of tensors on the device."""
        return self._syncs + _SYNCS[0] - self._reads0

    def make_current(self) -> None:
        pass

    def stream(self) -> _Stream:
        s = _Stream(eager=False)
        self._streams.add(s)
        return s

    def current_stream(self) -> _Stream:
        return self._current

    @contextlib.contextmanager
    def use(self, stream: _Stream) -> Iterator[None]:
        before, self._current = self._current, stream
        try:
            yield
        finally:
            self._current = before

    def event(self) -> _Event:
        return _Event()

    def record(self, event: _Event, stream: _Stream) -> None:
        event.stream, event.pos = stream, len(stream.ops)

    def wait(self, stream: _Stream, event: _Event) -> None:
        if event.stream is None:
            return
        src, pos = event.stream, event.pos
        stream.enqueue(lambda: src.run(pos))

    def query(self, event: _Event) -> bool:
        return event.stream is None or event.stream.done >= event.pos

    def synchronize(self) -> None:
        self._syncs += 1
        for s in [*self._streams, self._default]:
            s.run(len(s.ops))

    def pin(self, t: torch.Tensor) -> torch.Tensor:
        self._check_error()
        if isinstance(t, OnDevice):
            raise RuntimeError("cannot pin a tensor that is on the device")
        out = t.clone()
        self._pinned = {k: r for k, r in self._pinned.items() if r() is not None}
        self._pinned[id(out)] = weakref.ref(out)
        return out

    def is_pinned(self, t: torch.Tensor) -> bool:
        mine = self._pinned.get(id(t))
        if mine is not None and mine() is t:
            return True
        ptr = t.untyped_storage().data_ptr()
        return any(p <= ptr < p + n for p, n in self.registered.items())

    def copy(self, t: torch.Tensor) -> OnDevice:
        """A non-blocking host-to-device copy on the current stream."""
        self._check_error()
        if isinstance(t, OnDevice):
            raise RuntimeError("copy: the source is on the device already")
        if not self.is_pinned(t):
            raise RuntimeError(
                "non_blocking copy from pageable (unpinned, unregistered) host memory: "
                "CUDA would make it synchronous"
            )
        with torch._C.DisableTorchFunctionSubclass():
            dst = torch.empty_like(t).fill_(_poison(t.dtype))
        dst = dst.as_subclass(OnDevice)
        storage = t.untyped_storage()

        def op() -> None:
            with torch._C.DisableTorchFunctionSubclass():
                dst.copy_(t)

        self._current.enqueue(op, reads=(storage.data_ptr(), storage.nbytes()))
        return dst

    def record_stream(self, t: torch.Tensor, stream: _Stream) -> None:
        if not isinstance(t, OnDevice):
            raise NotImplementedError(
                "Could not run 'aten::record_stream' with arguments from the 'CPU' backend "
                "(stand-in: record_stream of a host tensor)"
            )

    def can_register(self) -> bool:
        return True

    def host_register(self, ptr: int, size: int) -> int:
        self.register_calls += 1
        if self.fail_register > 0:
            self.fail_register -= 1
            self._error = ERR_ALLOC
            return ERR_ALLOC
        if any(p < ptr + size and ptr < p + n for p, n in self.registered.items()):
            self._error = ERR_ALREADY_REGISTERED
            return ERR_ALREADY_REGISTERED
        self.registered[ptr] = size
        return 0

    def host_unregister(self, ptr: int) -> int:
        self.unregister_calls += 1
        if ptr not in self.registered:
            self._error = ERR_NOT_REGISTERED
            return ERR_NOT_REGISTERED
        end = ptr + self.registered[ptr]
        if any(
            p < end and ptr < p + n
            for s in [*self._streams, self._default]
            for p, n in s.pending_reads()
        ):
            raise RuntimeError(f"host_unregister of 0x{ptr:x} while a queued copy still reads it")
        del self.registered[ptr]
        return 0

    def last_error(self) -> int:
        err, self._error = self._error, 0
        return err

    def _check_error(self) -> None:
        if self._error:
            raise RuntimeError(
                f"CUDA error {self._error} left set by an earlier call (cudaGetLastError "
                "was not called): this launch fails"
            )


def _poison(dtype: torch.dtype) -> Any:
    if dtype.is_floating_point or dtype.is_complex:
        return float("nan")
    return True if dtype == torch.bool else -99


def as_gpu(device: Any) -> Gpu | None:
    """``device`` as a :class:`Gpu`: itself if it is one, a :class:`CudaGpu` for a CUDA
    ``torch.device`` (index by :func:`loffdata.devices.resolve_cuda`), ``None`` otherwise."""
    if isinstance(device, Gpu):
        return device
    from loffdata.devices import resolve_cuda

    dev = torch.device(device)
    return CudaGpu(resolve_cuda(dev)) if dev.type == "cuda" else None
