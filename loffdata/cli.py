"""The ``loffdata`` console command (fire): ``loffdata inspect PATH``, ``loffdata verify PATH``,
``loffdata index PATH``."""

from __future__ import annotations

import sys
from typing import Any

import fire

from loffdata.convert import command as _convert
from loffdata.errors import LoffError
from loffdata.format.index import index_dataset
from loffdata.format.manifest import Manifest
from loffdata.verify import verify as _verify

__all__ = ["inspect", "verify", "index", "doctor", "main"]


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def summarize(manifest: Manifest) -> str:
    """A human-readable summary of a manifest."""
    f = manifest.features
    per_sample = manifest.num_bytes / max(manifest.num_samples, 1)
    lines = [
        f"format      {manifest.format} v{manifest.version}",
        f"samples     {manifest.num_samples} in {len(manifest.shards)} shards ({_human(manifest.num_bytes)}, {_human(per_sample)}/sample)",
        f"features    {f.dtype}{list(f.shape)} layout {f.layout}",
        f"classes     {'none' if manifest.classes is None else f'{len(manifest.classes)}: ' + ', '.join(manifest.classes[:10]) + (' ...' if len(manifest.classes) > 10 else '')}",
    ]
    for name, spec in manifest.extras.items():
        lines.append(f"extra       {name}: {spec.dtype}{list(spec.shape)}")
    if manifest.stats is not None:
        s = manifest.stats
        lines.append(f"stats       mean of channel means {s.mean.mean():.4g}, mean std {s.std.mean():.4g}")
    for k, v in manifest.source.items():
        lines.append(f"source      {k}: {v}")
    if manifest.skipped:
        lines.append(f"skipped     {len(manifest.skipped)} inputs (see manifest 'skipped')")
    return "\n".join(lines)


def inspect(path: str, **storage_options: Any) -> None:
    """Summarises a dataset: shards, samples, feature spec, classes, sizes."""
    print(summarize(Manifest.load(path, **storage_options)))


def verify(path: str, quiet: bool = False, **storage_options: Any) -> None:
    """Decodes every sample and checks it against the manifest; exits 1 on any problem."""
    report = _verify(path, progress=not quiet, **storage_options)
    for problem in report.problems:
        print(f"PROBLEM {problem}")
    print(f"{'OK' if report.ok else 'FAILED'}: {report.shards} shards, {report.samples} samples, {len(report.problems)} problems")
    if not report.ok:
        sys.exit(1)


def index(path: str, force: bool = False, **storage_options: Any) -> None:
    """Adds each shard's index (sample offsets and keys) to the manifest, for random access."""
    try:
        m = index_dataset(path, force=force, **storage_options)
    except LoffError as err:
        print(f"ERROR {err}")
        sys.exit(1)
    print(f"indexed: {len(m.shards)} shards, {m.num_samples} samples")


def doctor() -> None:
    """Prints torch/CUDA/DALI versions, the backend ``augment`` 'auto' picks and why, and mismatches."""
    from loffdata.doctor import report

    print(report())


def main() -> None:
    """Entry point of the ``loffdata`` command."""
    fire.Fire({"inspect": inspect, "verify": verify, "index": index, "doctor": doctor, "convert": _convert})


if __name__ == "__main__":
    main()
