"""StreamConfig: validation, and the keyword settings of StreamingDataset mapped onto it."""

import dataclasses
import inspect

import numpy as np
import pytest
import torch

from loffdata.storage.retry import RetryConfig
from loffdata.stream.dataset import StreamingDataset
from loffdata.stream.plan import PlanConfig
from loffdata.stream.streamconfig import StreamConfig
from loffdata.util import UNSET


@pytest.mark.parametrize("given", ["float16", "torch.float16", torch.float16, np.dtype("float16")])
def test_batch_dtype_accepts_names_and_dtypes(given):
    assert StreamConfig(batch_dtype=given).batch_dtype == "float16"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("on_error", "ignore", "on_error must be one of"),
        ("batch_size", 0, "batch_size must be >= 1"),
        ("batch_dtype", "int8", "batch_dtype must be None or one of"),
        ("partial", "even", "partial must be one of"),
        ("shuffle_buffer", 0, "shuffle_buffer must be >= 1"),
        ("cache_limit_bytes", -1, "cache_limit_bytes must be >= 0"),
    ],
)
def test_bad_values_are_named(field, value, message):
    with pytest.raises(ValueError, match=message):
        StreamConfig(**{field: value})


def test_wrong_types_are_type_errors():
    with pytest.raises(TypeError, match="storage_options must be a mapping"):
        StreamConfig(storage_options=["anon"])
    with pytest.raises(TypeError, match="retry must be a RetryConfig"):
        StreamConfig(retry=3)


def test_retry_from_a_dict_and_config_is_frozen():
    cfg = StreamConfig(retry={"attempts": 2, "timeout": 1.5})
    assert cfg.retry == RetryConfig(attempts=2, timeout=1.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3


def test_from_dict_refuses_unknown_settings():
    with pytest.raises(ValueError, match=r"unknown stream setting\(s\) \['shuffel'\]"):
        StreamConfig.from_dict({"shuffel": True})


def test_a_stream_config_is_a_plan_config_and_names_its_cache():
    cfg = StreamConfig(seed=3, partial="drop", cache_dir="/tmp/c", cache_limit_bytes=10)
    assert isinstance(cfg, PlanConfig)
    assert cfg.plan == PlanConfig(seed=3, partial="drop")
    assert (cfg.cache.cache_dir, cfg.cache.limit_bytes) == ("/tmp/c", 10)
    assert StreamConfig().cache is None


def test_keyword_settings_are_the_config_fields_and_declare_no_default():
    params = inspect.signature(StreamingDataset.__init__).parameters
    settings = {n for n, p in params.items() if p.default is UNSET}
    assert settings == {f.name for f in dataclasses.fields(StreamConfig)}
    others = {
        n: p.default for n, p in params.items() if n not in settings and n not in ("self", "source")
    }
    assert others == {"config": None, "rank": None, "world_size": None}


def test_keywords_override_the_config(make_dataset):
    root, _ = make_dataset(n=12, shard_size=4)
    base = StreamConfig(seed=5, batch_size=4, on_error="skip")
    ds = StreamingDataset(str(root), base, batch_size=3, retry=RetryConfig(attempts=1))
    assert ds.config == dataclasses.replace(base, batch_size=3, retry=RetryConfig(attempts=1))
    assert (ds.batch_size, ds.on_error, ds.retry.attempts, len(ds)) == (3, "skip", 1, 4)
    assert StreamingDataset(str(root)).config == StreamConfig()
