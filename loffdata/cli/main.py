"""The ``loffdata`` console command (also ``python -m loffdata``).

::

    loffdata inspect DIR            summary: shards, samples, feature spec, classes
    loffdata verify DIR [--quiet]   decode everything, check sizes and checksums; exit 1 on problems
    loffdata show DIR [--preset loffta] [--pick per-class] [--out show.png]   samples and views
    (PNG)
    loffdata index DIR|GLOB [--force] [--classes F]   add the index; foreign shards get a manifest
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
    classes = (
        "none"
        if manifest.classes is None
        else (
            f"{len(manifest.classes)}: "
            + ", ".join(manifest.classes[:10])
            + (" ..." if len(manifest.classes) > 10 else "")
        )
    )
    lines = [
        f"format      {manifest.format} v{manifest.version}",
        f"samples     {manifest.num_samples} in {len(manifest.shards)} shards "
        f"({_human(manifest.num_bytes)}, {_human(per_sample)}/sample)",
        f"features    {f.dtype}{list(f.shape)} layout {f.layout}",
        f"classes     {classes}",
    ]
    lines += [
        f"extra       {name}: {spec.dtype}{list(spec.shape)}"
        for name, spec in manifest.extras.items()
    ]
    if manifest.stats is not None:
        s = manifest.stats
        from loffdata.augment.channel import constant_channels

        lines.append(
            f"stats       mean of channel means {s.mean.mean():.4g}, mean std {s.std.mean():.4g}, "
            f"constant channels {constant_channels(s.std)}"
        )
    lines += [f"source      {k}: {v}" for k, v in manifest.source.items()]
    if manifest.skipped:
        lines.append(f"skipped     {len(manifest.skipped)} inputs (see manifest 'skipped')")
    return redact_text(
        "\n".join(_clip(line) for line in lines)
    )  # an old manifest may hold a password


def _clip(line: str, width: int = 300) -> str:
    """A summary line of at most ``width`` characters (a manifest may hold megabytes in one
    value)."""
    return line if len(line) <= width else f"{line[: width - 40]} ... ({len(line)} characters)"


def _load_manifest(path: str, storage_options: dict[str, Any]) -> Any:
    from loffdata.format.manifest import Manifest
    from loffdata.hints import check_dataset_dir, check_manifest_for_glob

    check_manifest_for_glob(path)
    check_dataset_dir(path)
    return Manifest.load(path, **storage_options)


def inspect(path: str, *, storage_options: dict[str, Any] | None = None) -> None:
    """Summarises a dataset: shards, samples, feature spec, classes, sizes.

    Args:
        path: dataset directory or manifest URL (local, http(s)://, s3://).
        storage_options: fsspec options for remote data, e.g. '{anon: true}'.
    """
    print(summarize(_load_manifest(path, storage_options or {})))


def verify(
    path: str, *, quiet: bool = False, storage_options: dict[str, Any] | None = None
) -> None:
    """Decodes every sample and checks it against the manifest; exits 1 on any problem.

    Args:
        path: dataset directory or manifest URL (local, http(s)://, s3://).
        quiet: no progress bar.
        storage_options: fsspec options for remote data, e.g. '{anon: true}'.
    """
    from loffdata.hints import check_dataset_dir, check_manifest_for_glob
    from loffdata.ops.verify import verify as _verify

    check_manifest_for_glob(path)
    check_dataset_dir(path)
    report = _verify(path, progress=not quiet, **(storage_options or {}))
    for problem in report.problems:
        print(f"PROBLEM {problem}")
    print(
        f"{'OK' if report.ok else 'FAILED'}: {report.shards} shards, {report.samples} samples, "
        f"{len(report.problems)} problems"
    )
    if not report.ok:
        sys.exit(1)


def show(
    path: str,
    *,
    out: str = "show.png",
    preset: str = "loffta",
    samples: int = 4,
    views: int = 3,
    pick: str = "first",
    seed: int = 0,
    storage_options: dict[str, Any] | None = None,
) -> None:
    """Draws a PNG of a few samples of a dataset and their augmented views (channels as RGB by PCA).

    Args:
        path: dataset directory or manifest URL (local, http(s)://, s3://).
        out: PNG file to write (its directory must exist).
        preset: augmentation preset whose views are drawn: 'loffta', 'frofa' or 'none'.
        samples: samples (rows) to draw, at least 1.
        views: augmented views (columns) per sample, next to the original; at least 1.
        pick: which samples: 'first' (the first ones), 'random' (seeded by --seed) or
            'per-class' (one of each class in turn; reads every label once).
        seed: augmentation seed (and the random pick's).
        storage_options: fsspec options for remote data, e.g. '{anon: true}'.
    """
    from loffdata.hints import check_dataset_dir, check_manifest_for_glob

    _check_show_values(out=out, preset=preset, samples=samples, views=views, pick=pick)
    check_manifest_for_glob(path)
    check_dataset_dir(path)
    from loffdata.cli.show import render_views

    options = dict(preset=preset, samples=samples, views=views, seed=seed, pick=pick)
    written = render_views(path, out=out, storage_options=storage_options or {}, **options)
    print(f"wrote {written}")


def _check_show_values(*, out: str, preset: str, samples: int, views: int, pick: str) -> None:
    """``show``'s values, checked before any work (a CliError names the flag)."""
    import os

    from loffdata.augment.spec import PRESETS

    if preset not in PRESETS:
        raise cliutil.CliError(
            f"--preset {preset!r}: unknown{cliutil.suggest(preset, list(PRESETS), prefix='')}; "
            f"presets: {', '.join(PRESETS)}"
        )
    picks = ("first", "random", "per-class")
    if pick not in picks:
        raise cliutil.CliError(
            f"--pick {pick!r}: expected one of {', '.join(picks)}"
            f"{cliutil.suggest(pick, list(picks), prefix='')}"
        )
    for name, value in (("samples", samples), ("views", views)):
        if value < 1:
            raise cliutil.CliError(f"--{name} must be at least 1, got {value}")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise cliutil.CliError(
            f"--out {out!r}: the directory {folder!r} does not exist; create it first"
        )


def index(
    path: str,
    *,
    force: bool = False,
    classes: str | None = None,
    quiet: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> None:
    """Adds each shard's index to the manifest; for shards without one, builds the whole manifest.

    ``loffdata index DIR`` on a dataset adds each shard's index (sample offsets and keys) for
    random access. On a directory or glob of ``.tar`` shards from any tar writer (webdataset,
    GNU tar) with no ``manifest.json``, it reads every sample once and writes the full
    manifest: counts, shapes and dtypes (from the first sample, checked on all), channel
    statistics, class names, sha256 and the index.

    Args:
        path: dataset directory or manifest URL (local, http(s)://, s3://), or a directory or
            glob ('DIR/*.tar', quoted) of shards without a manifest.
        force: recompute indexes the manifest already has.
        classes: class names for shards without a manifest: a file (JSON list or
            {label: name} mapping, or one name per line) or comma-separated names; default:
            the label values ('0', '1', ...).
        quiet: no progress bar.
        storage_options: fsspec options for remote data, e.g. '{anon: true}'.
    """
    from loffdata.format.index import check_writable

    check_writable(path)  # before any read: the manifest is written next to the shards
    so = storage_options or {}
    if _has_manifest(path, so):
        return _index_dataset(path, force=force, classes=classes, storage_options=so)
    from loffdata.ops.manifest import build_manifest

    m = build_manifest(path, classes=classes, progress=not quiet, storage_options=so)
    print(
        f"wrote a manifest: {len(m.shards)} shards, {m.num_samples} samples, features "
        f"{m.features.dtype}{list(m.features.shape)}, {m.num_classes or 'no'} classes"
    )


def _index_dataset(
    path: str, *, force: bool, classes: str | None, storage_options: dict[str, Any]
) -> None:
    """``index`` on a dataset with a manifest: each shard's index added to it."""
    from loffdata.format.index import index_dataset

    if classes is not None:
        raise cliutil.CliError(f"--classes: {path!r} has a manifest already (its classes are kept)")
    m = index_dataset(path, force=force, **storage_options)
    print(f"indexed: {len(m.shards)} shards, {m.num_samples} samples")


def _has_manifest(path: str, storage_options: dict[str, Any]) -> bool:
    import fsspec

    from loffdata.format.manifest import manifest_url

    if any(c in path for c in "*?[") or path.endswith(".tar"):
        return False
    fs, p = fsspec.core.url_to_fs(manifest_url(path), **storage_options)
    return fs.exists(p) or not fs.isdir(p.rsplit("/", 1)[0])


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
    "convert": "loffdata.cli.convert:command",
    "doctor": doctor,
}


def _resolve(command: Callable[..., Any] | str) -> Callable[..., Any]:
    if callable(command):
        return command
    module, _, name = command.partition(":")
    return getattr(importlib.import_module(module), name)


def _lazy_doc(command: str) -> str | None:
    """The docstring of ``"module:function"``, read from its source without importing it."""
    import ast
    import importlib.util

    module, _, name = command.partition(":")
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return None
    with open(spec.origin, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    node = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name), None)
    return None if node is None else ast.get_docstring(node)


def _usage() -> str:
    lines = [
        "usage: loffdata COMMAND [ARGS] [--option VALUE ...]   (loffdata COMMAND --help for its "
        "options)",
        "",
        "commands:",
    ]
    for name, command in COMMANDS.items():
        doc = command.__doc__ if callable(command) else _lazy_doc(command)
        lines.append(f"  {name:<10} {cliutil.docstring_summary(doc)}")
    return "\n".join(lines) + "\n"


def _dispatch(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(_usage())
        return
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        raise cliutil.CliError(
            f"unknown command {name!r}{cliutil.suggest(name, list(COMMANDS), prefix='')}; "
            f"commands: {', '.join(COMMANDS)}"
        )
    fn = _resolve(COMMANDS[name])
    options = getattr(fn, "options", None) or cliutil.options_from_function(fn)
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
