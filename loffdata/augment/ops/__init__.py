"""The augmentation ops, one concept per module; :mod:`loffdata.augment.registry` finds them.

Each module declares ``OPS`` (a tuple of :class:`~loffdata.augment.opkit.Op`) and ``STEPS``
(a tuple of :class:`~loffdata.augment.opkit.Step`). A new op is one new module here (plus
its test and its docs line): the registry imports every module of this package.
"""

__all__: list[str] = []
