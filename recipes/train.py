"""Train the LOFF-TA classifier on a cached feature set: a thin fire CLI over loffdata.train.trainer.

Usage::

    python recipes/train.py --config recipes/configs/demo.yaml [--field value ...]
    python recipes/train.py --config recipes/configs/demo.yaml --resume     # continue <out>/checkpoint.pt
    torchrun --nproc_per_node 8 recipes/train.py --config recipes/configs/dinov2_vitb14_256_deits.yaml

Any key of the config (see the schema at the top of the YAML files) can be overridden by a
flag of the same name. Outputs go to ``<out>``: ``config.json`` (resolved configuration),
``log.jsonl`` (one line per epoch) and ``checkpoint.pt`` (written atomically every epoch).
"""

from __future__ import annotations

from typing import Any

import fire

from loffdata.train.trainer import load_config, train

__all__ = ["main"]


def main(config: str | None = None, **overrides: Any) -> None:
    """Train with the YAML ``config`` (if given) and ``overrides`` applied on top.

    Args:
        config: path of a flat YAML config (``recipes/configs/*.yaml``).
        **overrides: any config key, e.g. ``--epochs 10 --augment none --resume``.
    """
    results = train(load_config(config, **overrides))
    final = results["final"]
    if results["rank"] == 0 and final is not None and results["completed"] and "val_acc" in final:
        print(f"done: val_acc {final['val_acc']:.2%} after {final['epoch'] + 1} epochs; outputs in {results['out']}")


if __name__ == "__main__":
    fire.Fire(main)
