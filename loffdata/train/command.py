"""Train the LOFF-TA classifier on a cached feature set (a thin CLI over loffdata.train.trainer).

Usage::

    loffdata-train --config recipes/configs/demo.yaml [--field value ...]
    loffdata-train --config recipes/configs/demo.yaml --resume     # continue <out>/checkpoint.pt
    torchrun --nproc_per_node 8 recipes/train.py --config
    recipes/configs/dinov2_vitb14_256_deits.yaml

``loffdata-train`` and ``python recipes/train.py`` are the same command. Every flag is a field
of ``TrainConfig`` (same name, default and doc); a ``--config`` file (YAML or JSON) sets any
of them, flags given win. All are checked before training starts (the classifier kind, the
augmentation, the shapes against the cache, ``--resume`` against the checkpoint). Outputs go
to ``<out>``: ``config.json`` (resolved configuration), ``log.jsonl`` (one line per epoch)
and ``checkpoint.pt`` (written atomically every epoch).
"""

from __future__ import annotations

from loffdata.cli import parse as cliutil
from loffdata.train.trainconfig import STREAM_FROM_RUN, TrainConfig

__all__ = ["console", "main"]

OPTIONS = cliutil.options_from_dataclass(
    TrainConfig, exclude=[f"stream.{k}" for k in STREAM_FROM_RUN]
)


def main(argv: list[str] | None = None) -> None:
    """Checks every flag, the config file and the values against the cache, then trains."""
    config = cliutil.parse_config(TrainConfig, OPTIONS, argv, prog="loffdata-train", doc=__doc__)
    if config is None:
        return
    from loffdata.train.preflight import preflight
    from loffdata.train.trainer import train  # heavy (torch, the loader): only after the flags

    preflight(config)
    results = train(config)
    if results["rank"] != 0:
        return
    final = results["final"]
    if not results["completed"]:
        print(
            f"stopped early at step {results['step']} (--max_steps {config.max_steps}); "
            f"checkpoint in {results['out']}: continue with --resume and a larger --max_steps (or "
            "none)"
        )
    elif final is not None and "val_acc" in final:
        print(
            f"done: val_acc {final['val_acc']:.2%} after {final['epoch'] + 1} epochs; outputs in "
            f"{results['out']}"
        )


def console() -> None:
    """The ``loffdata-train`` console script."""
    cliutil.run(main)
