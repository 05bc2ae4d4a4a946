"""LoffLoader under real torchrun DDP (gloo, 2 processes) and PyTorch Lightning."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from loffdata.loader import LoffLoader

ROOT = Path(__file__).resolve().parents[1]

DDP_SCRIPT = """
import json, sys, torch, torch.distributed as dist
from loffdata.loader import LoffLoader
dist.init_process_group("gloo")
rank = dist.get_rank()
loader = LoffLoader(sys.argv[1], batch_size=4, num_workers=2, augment=None, seed=0)
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(8 * 4 * 4, 3))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
seen = []
for epoch in range(2):
    loader.set_epoch(epoch)
    got = []
    for x, y in loader:  # a rank with fewer batches would hang the backward allreduce
        loss = torch.nn.functional.cross_entropy(model(x.flatten(1)), y)
        opt.zero_grad(); loss.backward(); opt.step()
        got.extend(int(v) for v in x[:, 0, 0, 0])
    seen.append(got)
json.dump({"len": len(loader), "seen": seen}, open(f"{sys.argv[2]}/rank{rank}.json", "w"))
dist.destroy_process_group()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_ddp_equal_batches_and_exactly_once(tmp_path):
    from loffdata.format.writer import WriterConfig, write_dataset
    from tests.conftest import synthetic_samples

    data = tmp_path / "data"
    items = list(synthetic_samples(37))
    # uneven shards: 20, 10, 5, 2 samples
    write_dataset(str(data), items, config=WriterConfig(max_samples=20))
    (tmp_path / "ddp.py").write_text(DDP_SCRIPT)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        str(tmp_path / "ddp.py"),
        str(data),
        str(tmp_path),
    ]
    subprocess.run(cmd, check=True, cwd=ROOT, timeout=600, capture_output=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["len"] == ranks[1]["len"] == 5  # ceil(37 / 2) = 19 samples -> 5 batches
    for epoch in range(2):
        a, b = (r["seen"][epoch] for r in ranks)
        assert len(a) == len(b) == 19
        assert sorted(set(a) | set(b)) == list(range(37))
        assert len(a) + len(b) - 37 == 1  # one padded repeat (documented "pad" policy)


def test_lightning_trainer_fit(make_dataset, tmp_path):
    pl = pytest.importorskip("pytorch_lightning")
    root, _ = make_dataset(n=40, shard_size=10, classes=3)

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(8 * 4 * 4, 3)
            self.steps = 0

        def training_step(self, batch, _):
            x, y = batch
            self.steps += 1
            return torch.nn.functional.cross_entropy(self.net(x.flatten(1)), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    loader = LoffLoader(str(root), batch_size=8, num_workers=1, augment="loffta")
    model = Module()
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, train_dataloaders=loader)
    assert model.steps == 2 * len(loader) == 10
    assert loader.epoch == 1  # the second pass took the next epoch


def test_accelerate_prepare_leaves_loader_working(make_dataset):
    accelerate = pytest.importorskip("accelerate")
    root, _ = make_dataset(n=24, shard_size=8, classes=3)
    accelerator = accelerate.Accelerator(cpu=True)
    model = torch.nn.Linear(8 * 4 * 4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = LoffLoader(str(root), batch_size=8, num_workers=0, device=accelerator.device)
    model, opt, prepared = accelerator.prepare(model, opt, loader)
    assert prepared is loader  # not a DataLoader: accelerate passes it through untouched
    steps = 0
    for x, y in prepared:
        loss = torch.nn.functional.cross_entropy(model(x.flatten(1)), y)
        accelerator.backward(loss)
        opt.step()
        opt.zero_grad()
        steps += 1
    assert steps == len(loader) == 3
