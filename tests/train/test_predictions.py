"""Per-sample predictions (key, label, prediction, loss) and the same run for 0 and 2 workers."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from loffdata.train.predictions import PredictionsFile, prediction_rows, rank_path
from loffdata.train.trainer import train
from tests.train.test_train import _config, data  # noqa: F401  (the tiny cache fixture)

pytestmark = pytest.mark.filterwarnings("ignore::loffdata.train.run.FewStepsWarning")


def test_rows_hold_key_label_prediction_and_loss():
    logits = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    rows = prediction_rows(["a", "b", "c"], torch.tensor([0, 0, 1]), logits)
    assert [(r["key"], r["label"], r["prediction"]) for r in rows] == [
        ("a", 0, 0),
        ("b", 0, 1),
        ("c", 1, 0),
    ]
    want = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 0, 1]), reduction="none")
    assert [r["loss"] for r in rows] == pytest.approx(want.tolist())
    with pytest.raises(ValueError, match="same samples"):
        prediction_rows(["a"], torch.tensor([0, 1]), logits[:2])


def test_file_formats_and_rank_names(tmp_path):
    for name in ("p.csv", "p.jsonl"):
        f = PredictionsFile(tmp_path / name)
        f.add(["x", "y"], torch.tensor([1, 0]), torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
        path = f.write()
        text = path.read_text()
        rows = (
            list(csv.DictReader(text.splitlines()))
            if name.endswith("csv")
            else [json.loads(line) for line in text.splitlines()]
        )
        assert [r["key"] for r in rows] == ["x", "y"] and [int(r["prediction"]) for r in rows] == [
            1,
            0,
        ]
    with pytest.raises(ValueError, match=".csv or .jsonl"):
        PredictionsFile(tmp_path / "p.txt")
    assert (
        rank_path("out/p.csv", 0, 1).name == "p.csv"
        and rank_path("out/p.csv", 1, 2).name == "p.rank1.csv"
    )


def test_same_seed_same_val_accuracy_and_predictions_with_0_and_2_workers(data, tmp_path):  # noqa: F811
    results, predictions = {}, {}
    for workers in (0, 2):
        out = tmp_path / f"w{workers}"
        results[workers] = train(
            _config(data, out, num_workers=workers, epochs=2, predictions=str(out / "val.jsonl"))
        )["history"]
        predictions[workers] = [
            json.loads(line) for line in (out / "val.jsonl").read_text().splitlines()
        ]
    keys = ("epoch", "step", "train_loss", "val_loss", "val_acc")
    assert [[r[k] for k in keys] for r in results[0]] == [[r[k] for k in keys] for r in results[2]]
    assert predictions[0] == predictions[2]
    assert sorted(p["key"] for p in predictions[0]) == [
        f"s{i:06d}" for i in range(30)
    ]  # every val sample once
    acc = sum(p["label"] == p["prediction"] for p in predictions[0]) / 30
    assert acc == pytest.approx(results[0][-1]["val_acc"])
