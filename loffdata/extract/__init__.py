"""The producer wing: images -> frozen timm model -> feature maps -> shards.

Needs the ``extract`` extra (timm, pillow, webdataset). Loader users never import it.

Submodules, in the order of the data flow: config, images (shapes), model, plan, batches,
pipeline, sink, finalize, record (runtime, jsonio: shared helpers).

The names below are imported from their modules on first use (see docs/api.md).
"""

from __future__ import annotations

from loffdata.util import lazy_exports

_WHERE = {
    "ExtractConfig": "loffdata.extract.extractconfig",
    "RandomWeightsWarning": "loffdata.extract.extractconfig",
    "build_model": "loffdata.extract.model",
    "extract": "loffdata.extract.pipeline",
    "ImageRecord": "loffdata.extract.images",
    "BadImageError": "loffdata.extract.images",
    "open_source": "loffdata.extract.images",
    "load_image": "loffdata.extract.images",
}

__all__ = sorted(_WHERE)
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
