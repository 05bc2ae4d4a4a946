"""Checking a dataset against its manifest: every shard read, every sample decoded.

:func:`verify` reports *every* problem it finds (not just the first), each naming the
shard and, where it applies, the sample key. Samples are judged by the one check of every
read path (:mod:`loffdata.stream.checks`), and their features must be finite.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from loffdata.errors import LoffError, ManifestError, SampleError
from loffdata.format import codec
from loffdata.format.manifest import Manifest, ShardInfo, manifest_url
from loffdata.format.sample import decode_sample
from loffdata.format.shardindex import read_index
from loffdata.format.tar import iter_sample_spans
from loffdata.redact import redact_text
from loffdata.safeio import open_binary
from loffdata.stream.checks import SampleRules, check_sample

__all__ = ["Problem", "VerifyReport", "verify"]


@dataclass(frozen=True)
class Problem:
    """One problem: where (shard URL, sample key or None) and what."""

    shard: str
    key: str | None
    message: str

    def __str__(self) -> str:
        where = self.shard if self.key is None else f"{self.shard} [{self.key}]"
        return redact_text(f"{where}: {self.message}")


@dataclass
class VerifyReport:
    """The outcome of :func:`verify`."""

    shards: int = 0
    samples: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(url: str, *, progress: bool = True, **storage_options: Any) -> VerifyReport:
    """Reads every shard of the dataset at ``url`` and checks it against the manifest.

    Checks: the manifest, shard present, byte size, sha256, tar structure (header fields,
    sizes), every sample decodes, feature shape and dtype, extras, labels within int64 and
    the class list, sample count per shard, the shard's index (offsets and keys) if it has
    one, and duplicate keys. Every problem is listed; none raises.
    """
    report, seen = VerifyReport(), set()
    try:
        manifest = Manifest.load(url, **storage_options)
        urls = manifest.shard_urls(url)
    except ManifestError as err:
        report.problems.append(Problem(manifest_url(url), None, str(err)))
        return report
    for info, shard_url in tqdm(
        list(zip(manifest.shards, urls)), desc="verify", unit="shard", disable=not progress
    ):
        report.shards += 1
        try:
            report.problems.extend(
                _check_shard(manifest, info, shard_url, seen, report, storage_options)
            )
        except Exception as err:  # a verifier lists what it cannot handle instead of stopping
            report.problems.append(
                Problem(shard_url, None, f"unexpected {type(err).__name__}: {err}")
            )
    return report


def _read(url: str, storage_options: dict) -> bytes:
    with open_binary(url, what="shard", **storage_options) as f:  # local: regular files only
        return f.read()


def _check_shard(
    manifest: Manifest, info: ShardInfo, url: str, seen: set, report: VerifyReport, so: dict
) -> Iterator[Problem]:
    try:
        data = _read(url, so)
    except (OSError, FileNotFoundError) as err:
        yield Problem(url, None, f"cannot read shard: {err}")
        return
    if len(data) != info.bytes:
        yield Problem(url, None, f"size is {len(data)} bytes, manifest says {info.bytes}")
    if hashlib.sha256(data).hexdigest() != info.sha256:
        yield Problem(url, None, "sha256 does not match the manifest")
    count, offsets, keys = 0, [], []
    try:
        for key, members, span in iter_sample_spans(io.BytesIO(data), shard=url):
            count += 1
            offsets.append(span.begin)
            keys.append(key)
            yield from _check_sample(manifest, url, key, members, seen)
        offsets.append(span.end if count else 0)
    except LoffError as err:
        yield Problem(url, None, str(err))
        offsets = None
    report.samples += count
    if count != info.samples:
        yield Problem(url, None, f"holds {count} samples, manifest says {info.samples}")
    elif info.indexed and offsets is not None:
        yield from _check_index(info, url, tuple(offsets), tuple(keys), so)


def _check_index(
    info: ShardInfo, url: str, offsets: tuple[int, ...], keys: tuple[str, ...], so: dict
) -> Iterator[Problem]:
    """The shard's index (inline or its sidecar) against where its samples really are."""
    index = info.index
    if index is None:
        sidecar = url[: len(url) - len(info.name)] + info.index_file
        try:
            index = read_index(
                sidecar, samples=info.samples, shard_bytes=info.bytes, sha256=info.sha256, **so
            )
        except LoffError as err:
            yield Problem(url, None, str(err))
            return
    for i, (want, got) in enumerate(zip(index.keys, keys)):
        if want != got:
            yield Problem(url, got, f"index says sample {i} is {want!r}")
            return
    for i, (want, got) in enumerate(zip(index.offsets.tolist(), offsets)):
        if want != got:
            yield Problem(
                url,
                keys[i] if i < len(keys) else None,
                f"index says byte {want}, the sample is at {got}",
            )
            return


def _check_sample(
    manifest: Manifest, url: str, key: str, members: dict, seen: set
) -> Iterator[Problem]:
    if key in seen:
        yield Problem(url, key, "duplicate sample key")
    seen.add(key)
    try:
        sample = decode_sample(key, members, shard=url)
    except LoffError as err:
        yield Problem(url, key, str(err))
        return
    try:
        check_sample(
            sample,
            SampleRules(manifest.features, manifest.num_classes, manifest.extras, batched=True),
            shard=url,
        )
    except SampleError as err:
        yield Problem(url, key, str(err).split(" (shard=")[0])
    if (bad := _nonfinite(sample.features)) is not None:
        yield Problem(url, key, bad)


def _nonfinite(features: Any) -> str | None:
    """Where the stored features hold NaN or infinity (the writer refuses them)."""
    if isinstance(features, codec.Quantized):
        values = features.scale
    elif features.dtype.kind == "f" or codec.dtype_name(features) == "bfloat16":
        values = features
    else:
        return None
    finite = np.isfinite(np.asarray(values, np.float32))
    if finite.all():
        return None
    return f"features hold {int(finite.size - finite.sum())} non-finite values (NaN or infinity)"
