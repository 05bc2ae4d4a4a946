"""The LOFF-TA demo: cache features of the embedded shapes dataset once, then train on them.

1. ``extract(...)`` runs a random-weight ``vit_tiny_patch16_224`` at 112 px over the
   embedded shapes dataset (10 classes, 1000 train + 200 val images; drawn procedurally,
   no download) and writes 192 x 7 x 7 float16 maps to ``<out>/train`` and ``<out>/val``.
   An existing cache of the right size is reused.
2. The ``deit_t``-like classifier of ``recipes/configs/demo.yaml`` is trained on the cache
   with ``LoffLoader``, once with LOFF-TA tensor augmentation (``loffta``) and once without
   (``none``), and a table compares val accuracy, throughput, data wait and wall time.

Usage::

    python recipes/demo.py            # ~2 min on a 2-core CPU, no GPU, no network
    python recipes/demo.py --quick    # tiny counts and epochs: a smoke run of seconds
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from loffdata.cli import parse as cliutil  # noqa: E402
from loffdata.extract.pipeline import ExtractConfig, extract  # noqa: E402
from loffdata.format.manifest import Manifest  # noqa: E402
from loffdata.train.run import FewStepsWarning  # noqa: E402
from loffdata.train.trainconfig import STREAM_FROM_RUN  # noqa: E402
from loffdata.train.trainer import TrainConfig, load_config, train  # noqa: E402

__all__ = ["DemoSettings", "build_cache", "format_table", "run_demo", "main"]

CONFIG = Path(__file__).resolve().parent / "configs" / "demo.yaml"
AUGMENTS = ("loffta", "none")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DemoSettings:
    """What the demo runs.

    Attributes:
        out: feature cache directory; runs go to ``<out>/runs/<augment>``.
        counts: shapes images per split.
        overrides: training-config values over ``recipes/configs/demo.yaml``.
    """

    out: str
    counts: dict[str, int]
    overrides: dict[str, Any]


FULL = {"counts": {"train": 1000, "val": 200}, "overrides": {}}
QUICK = {
    "counts": {"train": 64, "val": 32},
    "overrides": {"epochs": 2, "depth": 1, "batch_size": 32, "warmup_epochs": 0},
}


def build_cache(*, out: str, counts: dict[str, int], progress: bool = True) -> dict[str, Manifest]:
    """Extract the shapes feature cache into ``out``, or reuse one of the same size there."""
    try:
        manifests = {split: Manifest.load(f"{out}/{split}") for split in counts}
        if all(manifests[s].num_samples == n for s, n in counts.items()):
            print(f"reusing the feature cache in {out}/ ({_sizes(manifests)})", flush=True)
            return manifests
    except (FileNotFoundError, OSError, ValueError):
        pass
    print(f"extracting features of the shapes dataset ({counts}) into {out}/ ...", flush=True)
    manifests = extract(ExtractConfig(out=out, shapes_counts=dict(counts), progress=progress))
    print(f"feature cache ready: {_sizes(manifests)}", flush=True)
    return manifests


def _sizes(manifests: dict[str, Manifest]) -> str:
    shape = "x".join(map(str, next(iter(manifests.values())).features.shape))
    return ", ".join(f"{s} {m.num_samples}" for s, m in manifests.items()) + f"; {shape} maps"


def _train_one(settings: DemoSettings, augment: str) -> dict[str, Any]:
    config = load_config(
        CONFIG,
        **{
            "train": f"{settings.out}/train",
            "val": f"{settings.out}/val",
            "out": f"{settings.out}/runs/{augment}",
            "augment": augment,
            **settings.overrides,
        },
    )
    print(
        f"\n== training {config.model} (depth {config.depth or 'default'}) with "
        f"augment={augment!r}, "
        f"{config.epochs} epochs ==",
        flush=True,
    )
    with warnings.catch_warnings():  # the shapes classes are easy: few steps are enough here
        warnings.simplefilter("ignore", FewStepsWarning)
        results = train(config)
    history = results["history"]
    train_s = sum(r["train_time"] for r in history)
    samples = sum(r["samples_per_s"] * r["train_time"] for r in history)
    waits = sum(r["wait_fraction"] * r["train_time"] for r in history)
    return {
        "augment": augment,
        "val_acc": results["final"]["val_acc"],
        "best_val_acc": max(r["val_acc"] for r in history),
        "samples_per_s": samples / train_s,
        "wait_fraction": waits / train_s,
        "wall_s": results["wall_s"],
        "out": results["out"],
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    """Render the demo's result rows as a fixed-width table."""
    lines = [
        f"{'augment':<8} {'val acc':>8} {'best':>7} {'samples/s':>10} {'data wait':>10} "
        f"{'wall s':>7}"
    ]
    for r in rows:
        lines.append(
            f"{r['augment']:<8} {r['val_acc']:>8.1%} {r['best_val_acc']:>7.1%} "
            f"{r['samples_per_s']:>10,.0f} {r['wait_fraction']:>10.1%} {r['wall_s']:>7.1f}"
        )
    return "\n".join(lines)


def run_demo(settings: DemoSettings) -> dict[str, Any]:
    """Build (or reuse) the cache, train with and without tensor augmentation.

    Returns:
        ``{"rows": [one dict per augmentation], "extract_s": ..., "total_s": ...}``.
    """
    start = time.perf_counter()
    build_cache(out=settings.out, counts=settings.counts)
    extract_s = time.perf_counter() - start
    rows = [_train_one(settings, augment) for augment in AUGMENTS]
    return {"rows": rows, "extract_s": extract_s, "total_s": time.perf_counter() - start}


def main(quick: bool = False, out: str | None = None, **overrides: Any) -> None:
    """Run the demo and print the table.

    Args:
        quick: tiny counts and epochs (a smoke test); its cache goes to ``out/demo_quick``.
        out: feature cache directory (default ``out/demo``, or ``out/demo_quick``).
        **overrides: training-config values (any ``TrainConfig`` field), e.g. ``--epochs 20``.
    """
    preset = QUICK if quick else FULL
    settings = DemoSettings(
        out=out or ("out/demo_quick" if quick else "out/demo"),
        counts=preset["counts"],
        overrides={**preset["overrides"], **overrides},
    )
    report = run_demo(settings)
    print(
        "\nLOFF-TA on cached random-weight vit_tiny features of the shapes dataset (10 classes, "
        "chance 10%):"
    )
    print(format_table(report["rows"]))
    print(f"\nfeature cache: {report['extract_s']:.1f}s; total: {report['total_s']:.1f}s")
    print(
        f"outputs: cache in {settings.out}/{{train,val}}, runs (config.json, log.jsonl, "
        "checkpoint.pt) "
        f"in {settings.out}/runs/{{{','.join(AUGMENTS)}}}"
    )


_RUN_KEYS = ("train", "val", "out", "augment")  # set by the demo itself
OPTIONS = [
    *cliutil.options_from_function(main),
    *(
        o
        for o in cliutil.options_from_dataclass(
            TrainConfig, exclude=[f"stream.{k}" for k in STREAM_FROM_RUN]
        )
        if o.name not in _RUN_KEYS
    ),
]


def cli(argv: list[str] | None = None) -> None:
    """Checks every flag (the demo's own and the training fields), then runs the demo."""
    values = cliutil.parse_command(
        sys.argv[1:] if argv is None else argv,
        OPTIONS,
        prog="recipes/demo.py",
        doc=__doc__,
        config_file=False,
    )
    if values is None:
        return
    _, given = cliutil.parse_flags(sys.argv[1:] if argv is None else argv, OPTIONS)
    main(**{k: values[k] for k in given})  # only the flags given: demo.yaml holds the rest


if __name__ == "__main__":
    cliutil.run(cli)
