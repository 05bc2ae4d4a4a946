"""The ``loffdata`` console command (also ``python -m loffdata``).

::

    loffdata inspect DIR            summary: shards, samples, feature spec, classes
    loffdata verify DIR [--quiet]   decode everything, check sizes and checksums; exit 1 on problems
    loffdata show DIR [--preset loffta] [--out show.png]   PNG of a few samples and augmented views
    loffdata index DIR [--force]    add each shard's sample index to the manifest (random access)
    loffdata convert SRC DST [--pool 2] [--dtype int8] ...   derive a dataset from a dataset
    loffdata doctor                 torch/CUDA/DALI versions, the backend 'auto' picks and why

Each command is a function here (or ``"module:function"``, imported only when it runs)
whose keyword arguments are its flags and whose docstring is its ``--help``; adding a
command is one line in :data:`COMMANDS`. Flags are checked by :mod:`loffdata.cli.parse`
before the command starts (an unknown flag names the closest one). Heavy modules (torch,
the loader) are imported inside the commands, so ``--help`` answers at once.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

from loffdata.cli import parse as cliutil
from loffdata.redact import redact_text

__all__ = ["COMMANDS", "doctor", "index", "inspect", "main", "show", "summarize", "verify"]


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def summarize(manifest: Any) -> str:
    """A human-readable summary of a :class:`~loffdata.format.manifest.Manifest`."""
    f = manifest.features
    per_sample = manifest.num_bytes / max(manifest.num_samples, 1)
    classes = "none" if manifest.classes is None else (
        f"{len(manifest.classes)}: " + ", ".join(manifest.classes[:10]) + (" ..." if len(manifest.classes) > 10 else ""))
    lines = [
        f"format      {manifest.format} v{manifest.version}",
        f"samples     {manifest.num_samples} in {len(manifest.shards)} shards ({_human(manifest.num_bytes)}, {_human(per_sample)}/sample)",
        f"features    {f.dtype}{list(f.shape)} layout {f.layout}",
        f"classes     {classes}",
    ]
    lines += [f"extra       {name}: {spec.dtype}{list(spec.shape)}" for name, spec in manifest.extras.items()]
    if manifest.stats is not None:
        s = manifest.stats
        lines.append(f"stats       mean of channel means {s.mean.mean():.4g}, mean std {s.std.mean():.4g}")
    lines += [f"source      {k}: {v}" for k, v in manifest.source.items()]
    if manifest.skipped:
        lines.append(f"skipped     {len(manifest.skipped)} inputs (see manifest 'skipped')")
    return redact_text("\n".join(_clip(line) for line in lines))  # an old manifest may hold a password


def _clip(line: str, width: int = 300) -> str:
    """A summary line of at most ``width`` characters (a manifest may hold megabytes in one value)."""
    return line if len(line) <= width else f"{line[:width - 40]} ... ({len(line)} characters)"


def _load_manifest(path: str, storage_options: dict[str, Any]) -> Any:
    from loffdata.format.manifest import Manifest
    from loffdata.hints import check_dataset_dir

    check_dataset_dir(path)
    return Manifest.load(path, **storage_options)


def inspect(path: str, *, storage_options: dict[str, Any] | None = None) -> None:
    """Summarises a dataset: shards, samples, feature spec, classes, sizes.

    Args:
        path: dataset directory or manifest URL (local, http(s)://, s3://).
        storage_options: fsspec options for remote data, e.g. '{anon: true}'.
    """
    print(summarize(_load_manifest(path, storage_options or {})))


def verify(path: str, *, quiet: bool = False, storage_options: dict[str, Any] | None = None) -> None:
    """Decodes every sample and checks it against the manifest; exits 1 on any problem.

    Args:
        path: dataset directory or manifest URL (local, http(s)://, s3://).
        quiet: no progress bar.
        storage_options: fsspec options for remote data, e.g. '{anon: true}'.
    """
    from loffdata.hints import check_dataset_dir
    from loffdata.ops.verify import verify as _verify

    check_dataset_dir(path)
    report = _verify(path, progress=not quiet, **(storage_options or {}))
    for problem in report.problems:
        print(f"PROBLEM {problem}")
    print(f"{'OK' if report.ok else 'FAILED'}: {report.shards} shards, {report.samples} samples, {len(report.problems)} problems")
    if not report.ok:
        sys.exit(1)


def show(path: str, *, out: str = "show.png", preset: str = "loffta", samples: int = 4, views: int = 3,
         seed: int = 0, storage_options: dict[str, Any] | None = None) -> None:
    """Draws a PNG of a few samples of a dataset and their augmented views (channels as RGB by PCA).

    Args:
        path: dataset directory or manifest URL (local, http(s)://, s3://).
        out: PNG file to write.
        preset: augmentation preset whose views are drawn: 'loffta', 'frofa' or 'none'.
        samples: samples (rows) to draw, the first ones of the dataset.
        views: augmented views (columns) per sample, next to the original.
        seed: augmentation seed.
        storage_options: fsspec options for remote data, e.g. '{anon: true}'.
    """
    from loffdata.cli.show import render_views
    from loffdata.hints import check_dataset_dir

    check_dataset_dir(path)
    written = render_views(path, out=out, preset=preset, samples=samples, views=views, seed=seed,
                           storage_options=storage_options or {})
    print(f"wrote {written}")


def index(path: str, *, force: bool = False, storage_options: dict[str, Any] | None = None) -> None:
    """Adds each shard's index (sample offsets and keys) to the manifest, for random access.

    Args:
        path: dataset directory or manifest URL (local, http(s)://, s3://).
        force: recompute indexes the manifest already has.
        storage_options: fsspec options for remote data, e.g. '{anon: true}'.
    """
    from loffdata.format.index import index_dataset

    m = index_dataset(path, force=force, **(storage_options or {}))
    print(f"indexed: {len(m.shards)} shards, {m.num_samples} samples")


def doctor() -> None:
    """Prints torch/CUDA/DALI versions, the backend augment 'auto' picks and why, and mismatches."""
    from loffdata.cli.doctor import report

    print(report())


#: name -> command: a function of this module or ``"module:function"`` (imported when run).
COMMANDS: dict[str, Callable[..., Any] | str] = {
    "inspect": inspect,
    "verify": verify,
    "show": show,
    "index": index,
    "convert": "loffdata.ops.convert:command",
    "doctor": doctor,
}


def _resolve(command: Callable[..., Any] | str) -> Callable[..., Any]:
    if callable(command):
        return command
    module, _, name = command.partition(":")
    return getattr(importlib.import_module(module), name)


def _usage() -> str:
    lines = ["usage: loffdata COMMAND [ARGS] [--option VALUE ...]   (loffdata COMMAND --help for its options)", "",
             "commands:"]
    for name, command in COMMANDS.items():
        doc = command.__doc__ if callable(command) else f"see {command}"
        lines.append(f"  {name:<10} {cliutil.docstring_summary(doc)}")
    return "\n".join(lines) + "\n"


def _dispatch(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(_usage())
        return
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        raise cliutil.CliError(f"unknown command {name!r}{cliutil.suggest(name, list(COMMANDS), prefix='')}; "
                               f"commands: {', '.join(COMMANDS)}")
    fn = _resolve(COMMANDS[name])
    options = cliutil.options_from_function(fn)
    values = cliutil.parse_command(rest, options, prog=f"loffdata {name}", doc=fn.__doc__)
    if values is None:
        return
    positional = [values.pop(o.name) for o in options if o.positional]
    fn(*positional, **values)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``loffdata`` command."""
    cliutil.run(lambda: _dispatch(sys.argv[1:] if argv is None else list(argv)))


if __name__ == "__main__":
    main()
