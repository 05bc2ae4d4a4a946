"""Train the LOFF-TA classifier on a cached feature set (a thin CLI over loffdata.train.trainer).

Usage::

    python recipes/train.py --config recipes/configs/demo.yaml [--field value ...]
    python recipes/train.py --config recipes/configs/demo.yaml --resume     # continue <out>/checkpoint.pt
    torchrun --nproc_per_node 8 recipes/train.py --config recipes/configs/dinov2_vitb14_256_deits.yaml

Every flag is a field of ``TrainConfig`` (same name, default and doc); a ``--config`` file
(YAML or JSON) sets any of them, flags given win. All are checked before training starts.
Outputs go to ``<out>``: ``config.json`` (resolved configuration), ``log.jsonl`` (one line
per epoch) and ``checkpoint.pt`` (written atomically every epoch).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from loffdata.cli import parse as cliutil  # noqa: E402
from loffdata.train.config import STREAM_FROM_RUN  # noqa: E402
from loffdata.train.trainer import TrainConfig, train  # noqa: E402

__all__ = ["main"]

OPTIONS = cliutil.options_from_dataclass(TrainConfig, exclude=[f"stream.{k}" for k in STREAM_FROM_RUN])


def main(argv: list[str] | None = None) -> None:
    """Checks every flag and the config file, then trains."""
    values = cliutil.parse_command(sys.argv[1:] if argv is None else argv, OPTIONS,
                                   prog="recipes/train.py", doc=__doc__)
    if values is None:
        return
    results = train(cliutil.build(TrainConfig, values))
    final = results["final"]
    if results["rank"] == 0 and final is not None and results["completed"] and "val_acc" in final:
        print(f"done: val_acc {final['val_acc']:.2%} after {final['epoch'] + 1} epochs; outputs in {results['out']}")


if __name__ == "__main__":
    cliutil.run(main)
