"""The training wing: LOFF-TA classifiers, losses and the training recipe.

Needs the ``train`` extra (timm). Uses :class:`loffdata.loader.LoffLoader` like any user.

Submodules: models, trainer, utils.
"""

__all__: list[str] = []
