"""The shard format: codec, samples, tar reading, manifest, statistics, writing.

Bottom layer: depends only on :mod:`loffdata.errors` (and numpy/msgpack).

Submodules: codec, index, manifest, names, sample, stats, tar, writer.

The names below are imported from their modules on first use (see docs/api.md).
"""

from __future__ import annotations

from loffdata.util import lazy_exports

_WHERE = {
    "DTYPES": "loffdata.format.codec",
    "dtype_name": "loffdata.format.codec",
    "Quantized": "loffdata.format.codec",
    "quantize_int8": "loffdata.format.codec",
    "encode": "loffdata.format.codec",
    "decode": "loffdata.format.codec",
    "Sample": "loffdata.format.sample",
    "encode_sample": "loffdata.format.sample",
    "decode_sample": "loffdata.format.sample",
    "iter_sample_members": "loffdata.format.tar",
    "index_dataset": "loffdata.format.index",
    "shard_index": "loffdata.format.index",
    "Manifest": "loffdata.format.manifest",
    "ShardInfo": "loffdata.format.manifest",
    "TensorSpec": "loffdata.format.manifest",
    "manifest_url": "loffdata.format.manifest",
    "ChannelStats": "loffdata.format.stats",
    "WriterConfig": "loffdata.format.writer",
    "ShardWriter": "loffdata.format.writer",
    "write_dataset": "loffdata.format.writer",
}

__all__ = sorted(_WHERE)
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
