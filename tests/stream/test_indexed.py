"""Map-style access: ds[i] equals the streamed sample (local, HTTP, S3, int8, mixes); the
index from the manifest or learnt once; wrong offsets are caught; a torch Dataset view."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from torch.utils.data import DataLoader

from loffdata.errors import ShardReadError
from loffdata.format.codec import Quantized
from loffdata.storage.retry import RetryConfig
from loffdata.stream.dataset import StreamingDataset
from loffdata.stream.indexed import IndexedDataset
from loffdata.stream.mix import Mix, MixedDataset
from tests.servers import http_server, s3_server, write_shards  # noqa: F401

FAST = RetryConfig(attempts=2, backoff=0.01, timeout=5)


def same(a, b) -> bool:
    fa, fb = a["features"], b["features"]
    if isinstance(fa, Quantized):
        features = np.array_equal(fa.values, fb.values) and np.array_equal(fa.scale, fb.scale)
    else:
        features = np.array_equal(fa, fb)
    extras = set(a) == set(b) and all(
        np.array_equal(a[k], b[k]) for k in a if k not in ("features", "key", "label", "index")
    )
    return (
        features
        and extras
        and (a["key"], a["index"], a["label"]) == (b["key"], b["index"], b["label"])
    )


@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_getitem_equals_the_streamed_sample(make_dataset, dtype):
    root, _ = make_dataset(23, 5, dtype=dtype, extras=True)
    ds = StreamingDataset(root, seed=2, shuffle_buffer=4)
    streamed = list(ds)
    assert all(same(ds[x["index"]], x) for x in streamed)
    indexed = (
        getattr(ds.shards, "index", None) is not None
    )  # the writer recorded each shard's index
    assert same(ds[-1], ds[22]) and ds.indexed().scanned == (
        0 if indexed else 5
    )  # else each shard read once
    with pytest.raises(IndexError, match="outside the dataset's 23 samples"):
        ds[23]


def test_torch_dataset_view_with_workers(make_dataset):
    root, _ = make_dataset(17, 4)
    view = IndexedDataset(root)
    got = [
        int(i)
        for b in DataLoader(view, batch_size=5, shuffle=True, num_workers=2)
        for i in b["index"]
    ]
    assert sorted(got) == list(range(17)) and len(view) == 17


def test_wrong_offsets_are_caught_naming_shard_and_byte(make_dataset):
    root, _ = make_dataset(10, 5)
    view = IndexedDataset(root)
    view[0]
    offsets, keys = view.index[0]
    view.index[0] = (offsets, keys[1:] + keys[:1])  # an index that names other keys
    with pytest.raises(
        ShardReadError, match=r"shard-000000.tar.*at byte 0: expected sample 's0000001'"
    ):
        view[0]


def test_http_reads_one_range_per_sample(http_server):  # noqa: F811
    write_shards(Path(http_server.root), 12, 4)
    remote, local = (
        StreamingDataset(http_server.url, retry=FAST),
        StreamingDataset(http_server.root),
    )
    assert all(same(remote[i], local[i]) for i in (5, 4, 11))
    before = len(http_server.gets("shard-000001.tar"))
    assert same(remote[6], local[6])
    ranges = http_server.gets("shard-000001.tar")[before:]
    assert len(ranges) == 1 and ranges[0].startswith("bytes=")  # one range request: random access


def test_s3(make_dataset, s3_server):  # noqa: F811
    root, _ = make_dataset(9, 4, extras=True)
    url = s3_server.upload(root, "loff", "indexed")
    remote = StreamingDataset(url, storage_options=s3_server.storage_options)
    local = StreamingDataset(root)
    assert all(same(remote[i], local[i]) for i in range(9))


def test_mix_getitem_unifies_labels_as_streamed(tmp_path, make_dataset):
    a, _ = make_dataset(6, 4, name="a", classes=2)
    b, _ = make_dataset(5, 4, name="b", classes=3)
    ds = MixedDataset(Mix([str(a), str(b)]), seed=1)
    assert all(same(ds[x["index"]], x) for x in ds)


@pytest.mark.skipif(
    importlib.util.find_spec("loffdata.format.index") is None,
    reason="manifests without shard indexes",
)
def test_the_manifest_index_is_used_without_a_scan(make_dataset):
    from loffdata.format.index import index_dataset

    root, _ = make_dataset(12, 5)
    index_dataset(str(root))
    ds = StreamingDataset(root)
    assert same(ds[7], next(x for x in StreamingDataset(root, shuffle=False) if x["index"] == 7))
    assert ds.indexed().scanned == 0


@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_indexed_view_is_a_drop_in_torch_dataset(make_dataset, dtype):
    import warnings

    import torch

    root, _ = make_dataset(9, 4, dtype=dtype, extras=True)
    ds = StreamingDataset(root)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "The given NumPy array is not writable" would fail here
        batches = list(DataLoader(ds.indexed(), batch_size=4))
    features = torch.cat([b["features"] for b in batches])
    assert features.shape[0] == 9 and features.dtype == (
        torch.float16 if dtype == "float16" else torch.float32
    )
    stored = ds[3]["features"]
    expected = stored.dequantize() if isinstance(stored, Quantized) else stored
    assert np.array_equal(features[3].numpy(), expected)
    view = ds.indexed()[3]["features"]
    view += 1  # writable, and a copy: the stored form is untouched
    assert np.array_equal(
        ds[3]["features"].dequantize() if dtype == "int8" else ds[3]["features"], expected
    )


def test_a_server_that_ignores_range_is_named(make_dataset):
    """``python -m http.server`` answers a range request with 200 and the whole file."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    root, _ = make_dataset(6, 3)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        ds = StreamingDataset(
            f"http://127.0.0.1:{server.server_address[1]}/manifest.json", retry=FAST
        )
        assert sorted(x["index"] for x in ds) == list(range(6))  # streaming works without Range
        with pytest.raises(
            ShardReadError, match=r"shard-000001\.tar.*the server ignored the Range header"
        ):
            ds[4]
    finally:
        server.shutdown()
        server.server_close()
