"""Streaming: sources -> plan -> reader (sequential or random access) -> batches -> dataset.

Reads through :mod:`loffdata.storage`, decodes with :mod:`loffdata.format`.

Submodules: batching, dataset, plan, policy, reader, scatter, sources.
"""

__all__: list[str] = []
