"""The training wing: LOFF-TA classifiers, losses and the training recipe.

Needs the ``train`` extra (timm). Uses :class:`loffdata.loader.LoffLoader` like any user.

Submodules: models, trainer, utils, predictions.

The names below are imported from their modules on first use (see docs/api.md).
"""

from __future__ import annotations

from loffdata.util import lazy_exports

_WHERE = {
    "TrainConfig": "loffdata.train.trainconfig",
    "load_config": "loffdata.train.trainconfig",
    "train": "loffdata.train.trainer",
    "evaluate": "loffdata.train.loop",
    "ClassifierConfig": "loffdata.train.models",
    "LoffClassifier": "loffdata.train.models",
    "LinearProbe": "loffdata.train.models",
    "create_classifier": "loffdata.train.models",
    "create_optimizer": "loffdata.train.utils",
    "loss_fn": "loffdata.train.utils",
    "PredictionsFile": "loffdata.train.predictions",
}

__all__ = sorted(_WHERE)
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
