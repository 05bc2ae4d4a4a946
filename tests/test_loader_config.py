"""LoaderConfig and LoffLoader's keyword settings: one source of defaults, retry reaches reads."""

import dataclasses
import inspect
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from loffdata.errors import ShardReadError
from loffdata.loader import LoffLoader
from loffdata.loader.loaderconfig import LoaderConfig
from loffdata.storage.retry import RetryConfig
from loffdata.stream.streamconfig import StreamConfig
from loffdata.util import UNSET

_STREAM = {f.name for f in dataclasses.fields(StreamConfig)}
_LOADER = {f.name for f in dataclasses.fields(LoaderConfig)} - {"stream"}


def test_keyword_settings_are_config_fields_and_declare_no_default():
    params = inspect.signature(LoffLoader.__init__).parameters
    settings = {n for n, p in params.items() if p.default is UNSET}
    assert settings <= _STREAM | _LOADER
    assert {"retry", "batch_size", "augment", "device", "num_workers", "seed"} <= settings
    others = {
        n: p.default for n, p in params.items() if n not in settings and n not in ("self", "source")
    }
    assert others == {"config": None, "rank": None, "world_size": None}


def test_defaults_are_the_loader_defaults():
    cfg = LoaderConfig()
    assert (cfg.stream.batch_size, cfg.augment, cfg.num_workers, cfg.dtype) == (
        256,
        "loffta",
        0,
        "float32",
    )


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"dtype": "int8"}, ValueError, "dtype must be one of"),
        ({"num_workers": -1}, ValueError, "num_workers must be an int >= 0"),
        ({"views": 0}, ValueError, "views must be an int >= 1"),
        ({"prefetch_factor": 0}, ValueError, "prefetch_factor must be an int >= 1"),
        ({"backend": "cuda"}, ValueError, "backend must be one of"),
        ({"views": 2, "augment": None}, ValueError, "views > 1 needs an augmentation"),
        ({"stream": 5}, TypeError, "stream must be a StreamConfig"),
    ],
)
def test_bad_settings_are_named(changes, error, message):
    with pytest.raises(error, match=message):
        LoaderConfig(**changes)


def test_a_stream_config_without_batch_size_gets_the_default():
    cfg = LoaderConfig(stream=StreamConfig(drop_last=True))
    assert cfg.stream.batch_size == LoaderConfig().stream.batch_size == 256 and cfg.stream.drop_last
    assert LoaderConfig(stream={"shuffle": False}).stream.batch_size == 256


def test_replace_reaches_stream_fields_and_dtypes_are_normalised():
    cfg = LoaderConfig().replace(
        batch_size=8, retry={"attempts": 2}, dtype=torch.bfloat16, num_workers=0
    )
    assert (cfg.stream.batch_size, cfg.stream.retry.attempts, cfg.dtype, cfg.num_workers) == (
        8,
        2,
        "bfloat16",
        0,
    )
    assert LoaderConfig(stream={"batch_size": 4, "shuffle": False}).stream == StreamConfig(
        batch_size=4, shuffle=False
    )


def test_loader_maps_keywords_and_config_onto_its_dataset(make_dataset):
    root, _ = make_dataset(n=12, shard_size=4)
    config = LoaderConfig(
        stream=StreamConfig(batch_size=4, drop_last=True, shuffle_buffer=8), augment=None
    )
    retry = RetryConfig(attempts=2, timeout=3.0)
    loader = LoffLoader(
        str(root), config, batch_size=5, num_workers=0, retry=retry, dtype=torch.float16
    )
    ds = loader.dataset
    assert (ds.batch_size, ds.retry, ds.config.drop_last, ds.config.shuffle_buffer) == (
        5,
        retry,
        True,
        8,
    )
    assert ds.batch_dtype == "float16" and len(loader) == 2  # 12 // 5, drop_last from the config
    assert loader.manifest is ds.shards.manifest is not None  # read once, by the dataset
    x, _ = next(iter(loader))
    assert x.dtype == torch.float16 and x.shape[0] == 5


class _StallingHandler(SimpleHTTPRequestHandler):
    """Serves files, but never answers a request for a ``.tar`` until the test ends."""

    def log_message(self, *args) -> None:
        pass

    def _stalled(self) -> bool:
        if not self.path.endswith(".tar"):
            return False
        with self.server.lock:
            self.server.stalled.append(self.path)
        self.server.release.wait(60)
        return True

    def do_GET(self) -> None:
        if not self._stalled():
            super().do_GET()

    def do_HEAD(self) -> None:
        if not self._stalled():
            super().do_HEAD()


@pytest.fixture
def stalling_server(make_dataset):
    root, _ = make_dataset(n=8, shard_size=4)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_StallingHandler, directory=str(root)))
    server.daemon_threads = True
    server.lock, server.stalled, server.release = threading.Lock(), [], threading.Event()
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


def test_a_stalled_server_fails_with_the_configured_retry(stalling_server):
    url = f"http://127.0.0.1:{stalling_server.server_address[1]}"
    retry = RetryConfig(attempts=2, backoff=0.01, timeout=0.5)
    loader = LoffLoader(url, batch_size=4, num_workers=0, augment=None, shuffle=False, retry=retry)
    with pytest.raises(ShardReadError, match=r"shard-\d+\.tar") as info:
        next(iter(loader))
    assert url in str(info.value)
    assert retry.attempts <= len(stalling_server.stalled) <= 2 * retry.attempts


def test_the_documented_old_path_exports_the_same_objects():
    from loffdata.loader import config, loaderconfig

    assert config.__all__ == loaderconfig.__all__
    assert all(getattr(config, n) is getattr(loaderconfig, n) for n in config.__all__)
