"""The documented path of the loader's configuration: :mod:`loffdata.loader.loaderconfig`.

``from loffdata.loader.config import LoaderConfig`` keeps working (docs/api.md listed this
path); the code lives in ``loaderconfig.py``, named by what it configures.
"""

from __future__ import annotations

from loffdata.loader.loaderconfig import BACKENDS, LoaderConfig, resolve_augment

__all__ = ["LoaderConfig", "resolve_augment", "BACKENDS"]
