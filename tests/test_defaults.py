"""Each default shared by several configs is declared once (loffdata/defaults.py): every
config constructed with no arguments (or a function called without the knob) has its value."""

from __future__ import annotations

import inspect

import pytest

from loffdata import defaults
from loffdata.extract.extractconfig import ExtractConfig
from loffdata.loader import LoffLoader
from loffdata.loader.loaderconfig import LoaderConfig
from loffdata.train.models import ClassifierConfig
from loffdata.train.reinforce import reinforce
from loffdata.train.trainconfig import TrainConfig


def _train() -> TrainConfig:
    return TrainConfig(train="unused")


def _default_of(fn, name: str):
    return inspect.signature(fn).parameters[name].default


PLACES = {
    "BATCH_SIZE": [
        lambda: LoaderConfig().stream.batch_size,
        lambda: _train().batch_size,
        lambda: _default_of(reinforce, "batch_size"),
    ],
    "NUM_WORKERS": [lambda: LoaderConfig().num_workers, lambda: _train().num_workers],
    "DEVICE": [
        lambda: LoaderConfig().device,
        lambda: _train().device,
        lambda: ExtractConfig().device,
        lambda: _default_of(reinforce, "device"),
    ],
    "VIEWS": [lambda: LoaderConfig().views, lambda: _train().views],
    "PROBE": [lambda: _train().probe, lambda: ClassifierConfig().probe],
    "PROBE_LR_SCALE": [lambda: _train().probe_lr_scale, lambda: ClassifierConfig().probe_lr_scale],
    "TRANSFER": [lambda: LoaderConfig().transfer],
}


def test_every_shared_default_is_listed_here():
    assert set(PLACES) == set(defaults.__all__)


@pytest.mark.parametrize("name", sorted(PLACES))
def test_every_place_reads_the_one_declaration(name):
    want = getattr(defaults, name)
    assert [place() for place in PLACES[name]] == [want] * len(PLACES[name])


def test_the_loader_has_no_class_attribute_of_its_own_for_a_setting():
    settings = {f for f in LoaderConfig.__dataclass_fields__}
    assert not settings & set(vars(LoffLoader))  # e.g. `transfer` lives in LoaderConfig only


def test_loader_device_auto_is_the_cpu_without_cuda(make_dataset, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    root, _ = make_dataset(n=8, shard_size=8)
    loader = LoffLoader(str(root), batch_size=4, augment=None)
    assert loader.config.device == "auto" and loader.device == torch.device("cpu")
    assert loader.num_workers == 0 and loader.transfer == "auto"
