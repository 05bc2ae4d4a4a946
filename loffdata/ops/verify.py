"""Checking a dataset against its manifest: every shard read, every sample decoded.

:func:`verify` reports *every* problem it finds (not just the first), each naming the
shard and, where it applies, the sample key.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from loffdata.errors import LoffError, ManifestError
from loffdata.format.manifest import Manifest, ShardInfo, manifest_url
from loffdata.format.sample import decode_sample, features_match
from loffdata.format.tar import iter_sample_spans
from loffdata.redact import redact_text
from loffdata.safeio import open_binary

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
    for info, shard_url in tqdm(list(zip(manifest.shards, urls)), desc="verify", unit="shard", disable=not progress):
        report.shards += 1
        try:
            report.problems.extend(_check_shard(manifest, info, shard_url, seen, report, storage_options))
        except Exception as err:  # a verifier lists what it cannot handle instead of stopping
            report.problems.append(Problem(shard_url, None, f"unexpected {type(err).__name__}: {err}"))
    return report


def _read(url: str, storage_options: dict) -> bytes:
    with open_binary(url, what="shard", **storage_options) as f:  # local: regular files only
        return f.read()


def _check_shard(manifest: Manifest, info: ShardInfo, url: str, seen: set, report: VerifyReport, so: dict) -> Iterator[Problem]:
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
        yield from _check_index(info, url, tuple(offsets), tuple(keys))


def _check_index(info: ShardInfo, url: str, offsets: tuple[int, ...], keys: tuple[str, ...]) -> Iterator[Problem]:
    """The manifest's index of the shard against where its samples really are."""
    for i, (want, got) in enumerate(zip(info.keys, keys)):
        if want != got:
            yield Problem(url, got, f"index says sample {i} is {want!r}")
            return
    for i, (want, got) in enumerate(zip(info.offsets, offsets)):
        if want != got:
            yield Problem(url, keys[i] if i < len(keys) else None, f"index says byte {want}, the sample is at {got}")
            return


def _check_sample(manifest: Manifest, url: str, key: str, members: dict, seen: set) -> Iterator[Problem]:
    if key in seen:
        yield Problem(url, key, "duplicate sample key")
    seen.add(key)
    try:
        sample = decode_sample(key, members, shard=url)
    except LoffError as err:
        yield Problem(url, key, str(err))
        return
    mismatch = features_match(sample.features, manifest.features.shape, manifest.features.dtype)
    if mismatch:
        yield Problem(url, key, mismatch)
    n = manifest.num_classes
    if n is not None and sample.label is not None and not 0 <= sample.label < n:
        yield Problem(url, key, f"label {sample.label} outside the {n} classes")
    for name, spec in manifest.extras.items():
        if name not in sample.extras:
            yield Problem(url, key, f"extra tensor {name!r} missing")
        elif (m := features_match(sample.extras[name], spec.shape, spec.dtype)) is not None:
            yield Problem(url, key, f"extra {name!r}: {m.replace('features are', 'is')}")
