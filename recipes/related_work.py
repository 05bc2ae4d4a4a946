"""Related-work options on the demo cache: plain vs views k=2/4 vs distillation vs multi-scale.

Every run reads the same number of samples (``epochs`` passes over the train split), so the
table compares accuracy at a fixed read budget, and samples/s (samples *read* per second:
``views=k`` trains on ``k`` views of each read).

The distillation teacher is the plain run's own classifier (self-distillation, "born-again"):
:func:`loffdata.train.reinforce.reinforce` writes a copy of the cache with its top-5 logits
as the ``logits`` extra, then a fresh student trains with ``distill_weight`` 0.5, T = 2.
Multi-scale: grids 7 (stored), 5, 3, chunks of 16 samples, 4 chunks (64 samples) at grid 7.

Usage::

    python recipes/demo.py                     # builds out/demo once
    python recipes/related_work.py             # the table (about 6 minutes on 2 CPU cores)
    python recipes/related_work.py --quick     # 1 epoch each: a smoke run
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fire
import torch

from loffdata.train.checkpoint import load_checkpoint
from loffdata.train.models import create_classifier
from loffdata.train.reinforce import reinforce
from loffdata.train.trainer import CHECKPOINT_NAME, CONFIG_NAME, load_config, train

__all__ = ["main", "run_row"]

CONFIG = Path(__file__).resolve().parent / "configs" / "demo.yaml"


def run_row(
    name: str, *, cache: str, runs: str, train_split: str | None = None, **overrides: Any
) -> dict[str, Any]:
    """Train one row on the demo cache; return its final val accuracy and samples/s."""
    config = load_config(
        CONFIG,
        train=train_split or f"{cache}/train",
        val=f"{cache}/val",
        out=f"{runs}/{name}",
        progress=False,
        **overrides,
    )
    results = train(config)
    history = results["history"]
    train_s = sum(r["train_time"] for r in history)
    samples = sum(r["samples_per_s"] * r["train_time"] for r in history)
    row = {
        "run": name,
        "val_acc": results["final"]["val_acc"],
        "samples_per_s": samples / train_s,
        "wall_s": results["wall_s"],
        "out": results["out"],
    }
    print(json.dumps(row), flush=True)
    return row


def _teacher(run_dir: str) -> torch.nn.Module:
    saved = json.loads((Path(run_dir) / CONFIG_NAME).read_text())
    r = saved["resolved"]
    model = create_classifier(
        saved["model"],
        norm=saved["norm"],
        in_chans=r["in_chans"],
        grid=r["grid"],
        num_classes=r["num_classes"],
        depth=saved["depth"],
    )
    model.load_state_dict(
        load_checkpoint(Path(run_dir) / CHECKPOINT_NAME)["model"]
    )  # weights_only=True
    return model


def main(
    cache: str = "out/demo", runs: str = "out/related_work", quick: bool = False, **overrides: Any
) -> None:
    """Run the rows and print a markdown table."""
    common = {"epochs": 1, "warmup_epochs": 0, **overrides} if quick else dict(overrides)
    rows = [run_row("plain", cache=cache, runs=runs, **common)]
    reinforce(f"{cache}/train", f"{runs}/kd_cache/train", _teacher(rows[0]["out"]), topk=5)
    rows.append(
        run_row(
            "distill",
            cache=cache,
            runs=runs,
            train_split=f"{runs}/kd_cache/train",
            distill_weight=0.5,
            temperature=2.0,
            **common,
        )
    )
    rows.append(
        run_row(
            "multi-scale",
            cache=cache,
            runs=runs,
            batch_size=16,
            multiscale={"grids": [7, 5, 3], "base_chunks": 4},
            **common,
        )
    )
    rows += [run_row(f"views={k}", cache=cache, runs=runs, views=k, **common) for k in (2, 4)]
    print("\n| run | val acc | samples/s | wall s |\n|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['run']} | {r['val_acc']:.1%} | {r['samples_per_s']:,.0f} | {r['wall_s']:.1f} |"
        )


if __name__ == "__main__":
    fire.Fire(main)
