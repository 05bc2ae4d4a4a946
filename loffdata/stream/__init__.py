"""Streaming: sources -> plan -> reader (sequential or random access) -> batches -> dataset.

Reads through :mod:`loffdata.storage`, decodes with :mod:`loffdata.format`.

Submodules: batchbuffer, batching, checks, config, dataset, discover, indexed, layout,
mix, mixplan, plan, policy, reader, scatter, sources, workerstate.

The names below are imported from their modules on first use (see docs/api.md).
"""

from __future__ import annotations

from loffdata.util import lazy_exports

_WHERE = {
    "StreamConfig": "loffdata.stream.streamconfig",
    "ShardSet": "loffdata.stream.sources",
    "resolve_source": "loffdata.stream.sources",
    "load_manifest": "loffdata.stream.sources",
    "PlanConfig": "loffdata.stream.plan",
    "PlanState": "loffdata.stream.plan",
    "rank_plan": "loffdata.stream.plan",
    "resume_plan": "loffdata.stream.plan",
    "StreamingDataset": "loffdata.stream.dataset",
    "ErrorPolicy": "loffdata.stream.policy",
    "Mix": "loffdata.stream.mix",
    "Source": "loffdata.stream.mix",
    "MixedDataset": "loffdata.stream.mix",
    "IndexedDataset": "loffdata.stream.indexed",
    "SampleRules": "loffdata.stream.checks",
    "check_sample": "loffdata.stream.checks",
}

__all__ = sorted(_WHERE)
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
