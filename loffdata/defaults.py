"""Every default that more than one config shares, declared once; the configs read it here.

The values, and who reads them (``tests/test_defaults.py`` checks each one):

========================  =========  ====================================================
name                      value      read by
========================  =========  ====================================================
``BATCH_SIZE``            256        ``LoaderConfig`` (stream batch), ``TrainConfig``,
                                     ``reinforce``
``NUM_WORKERS``           0          ``LoaderConfig``, ``TrainConfig``
``DEVICE``                ``auto``   ``LoaderConfig``, ``TrainConfig``, ``ExtractConfig``,
                                     ``reinforce``
``VIEWS``                 1          ``LoaderConfig``, ``TrainConfig``
``PROBE``                 True       ``TrainConfig``, ``ClassifierConfig``
``PROBE_LR_SCALE``        10.0       ``TrainConfig``, ``ClassifierConfig``
``TRANSFER``              ``auto``   ``LoaderConfig``
========================  =========  ====================================================

Nothing here imports anything, so every layer may read it.
"""

from __future__ import annotations

__all__ = [
    "BATCH_SIZE",
    "DEVICE",
    "NUM_WORKERS",
    "PROBE",
    "PROBE_LR_SCALE",
    "TRANSFER",
    "VIEWS",
]

#: Samples per batch (on each rank) a loader delivers and a run steps on.
BATCH_SIZE = 256
#: DataLoader worker processes reading shards; 0 reads in the calling process (as torch's
#: DataLoader). The sample order is the same for any number (docs/streaming.md).
NUM_WORKERS = 0
#: Where batches, models and extraction go: ``auto`` is CUDA when available, else the CPU.
DEVICE = "auto"
#: Independently augmented views per sample.
VIEWS = 1
#: The classifier's probe path (a linear probe as a second head, loffdata.train.models).
PROBE = True
#: The probe path's learning rate over the run's.
PROBE_LR_SCALE = 10.0
#: How host batches reach a CUDA device (loffdata.loader.transfer): ``auto`` is the pin thread.
TRANSFER = "auto"
