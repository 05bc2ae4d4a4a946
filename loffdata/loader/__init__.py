"""The loader stage: a streaming dataset's batches on the device, augmented.

Modules, in the order a batch meets them: :mod:`~loffdata.loader.loaderconfig` (what the
loader is told, validated once; also importable as ``loffdata.loader.config``),
:mod:`~loffdata.loader.workers` (the worker processes),
:mod:`~loffdata.loader.device` (every CUDA call, or a strict CPU stand-in),
:mod:`~loffdata.loader.batch` (a batch and the one owner of its buffer),
:mod:`~loffdata.loader.transfer` (host-to-device copies), :mod:`~loffdata.loader.loader`
(:class:`LoffLoader`), :mod:`~loffdata.loader.multiscale` (batches at several grid sizes).

The names below are imported from their modules on first use, so importing
:mod:`loffdata.loader.loaderconfig` does not import the loader.
"""

from __future__ import annotations

from loffdata.util import lazy_exports

_WHERE = {
    "LoffLoader": "loffdata.loader.loader",
    "LoaderStats": "loffdata.loader.stats",
    "Batch": "loffdata.loader.batch",
    "BatchWithExtras": "loffdata.loader.batch",
    "StandInCuda": "loffdata.loader.device",
    "LoaderConfig": "loffdata.loader.loaderconfig",
    "MultiScaleConfig": "loffdata.loader.multiscale",
    "MultiScaleLoader": "loffdata.loader.multiscale",
}

__all__ = sorted(_WHERE)
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
