"""The shard format: codec, samples, tar reading, manifest, statistics, writing.

Bottom layer: depends only on :mod:`loffdata.errors` (and numpy/msgpack).

Submodules: codec, index, manifest, sample, stats, tar, writer.
"""

__all__: list[str] = []
