import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from loffdata.errors import WorkerDiedError
from loffdata.format.writer import WriterConfig, write_dataset
from loffdata.loader import Batch, BatchWithExtras, LoffLoader
from loffdata.loader.batch import LoadedBatch
from loffdata.loader.device import StandInCuda
from loffdata.loader.loaderconfig import LoaderConfig
from loffdata.loader.transfer import select_transfer
from loffdata.stream.streamconfig import StreamConfig
from tests.resume_helpers import assert_resumes_exactly


def _digest(batch) -> str:
    h = hashlib.sha1(batch.features.float().numpy().tobytes())
    h.update(batch.labels.numpy().tobytes())
    return h.hexdigest()


@pytest.fixture
def data(make_dataset):
    root, _ = make_dataset(n=52, shard_size=12, extras=True, classes=4)
    return str(root)


_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, _CUDA])])
def test_batches_are_on_device_augmented_and_counted(data, device):
    loader = LoffLoader(data, batch_size=8, num_workers=0, augment="loffta", seed=1, device=device)
    batches = list(loader)
    assert len(batches) == len(loader) == 7  # ceil(52 / 8)
    x, y = batches[0]
    assert isinstance(batches[0], Batch) and x.dtype == torch.float32 and x.shape == (8, 8, 4, 4)
    assert x.device.type == y.device.type == device  # the device asked for, features and labels
    assert y.dtype == torch.int64 and sum(len(b.labels) for b in batches) == 52
    plain = list(LoffLoader(data, batch_size=8, num_workers=0, augment=None, seed=1))
    assert not torch.equal(plain[0].features, x.cpu())  # the augmentation changed something
    assert [b.labels.tolist() for b in plain] == [b.labels.tolist() for b in batches]
    assert loader.stats.samples == 52 and loader.stats.bytes == 52 * 8 * 16 * 2


def test_every_sample_once_per_epoch_and_epochs_differ(data):
    loader = LoffLoader(data, batch_size=8, num_workers=2, augment=None)
    first = [int(v) for x, _ in loader for v in x[:, 0, 0, 0]]
    assert sorted(first) == list(range(52))
    loader.set_epoch(1)
    second = [int(v) for x, _ in loader for v in x[:, 0, 0, 0]]
    assert sorted(second) == list(range(52)) and second != first


def test_epoch_advances_without_set_epoch(data):
    loader = LoffLoader(data, batch_size=8, num_workers=0, augment=None)
    a = [b.labels.tolist() for b in loader]
    b = [b.labels.tolist() for b in loader]
    assert loader.epoch == 1 and a != b


def test_same_batches_whatever_the_number_of_workers(data):
    runs = [
        [_digest(b) for b in LoffLoader(data, batch_size=8, num_workers=w, seed=3)] for w in (0, 1)
    ]
    assert runs[0] == runs[1]


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_equals_uninterrupted_bitwise(data, workers):
    def make():
        loader = LoffLoader(data, batch_size=8, num_workers=workers, augment="loffta", seed=5)
        loader.set_epoch(2)
        return loader

    assert_resumes_exactly(make, stops=[0, 1, 3, 6], key=_digest)


@pytest.mark.slow
def test_resume_from_checkpoint_written_in_another_process(data, tmp_path):
    script = tmp_path / "first.py"
    script.write_text(
        "import sys, torch\n"
        "from loffdata.loader import LoffLoader\n"
        f"loader = LoffLoader({data!r}, batch_size=8, num_workers=2, seed=7)\n"
        "it = iter(loader)\n"
        "for _ in range(3): next(it)\n"
        "torch.save(loader.state_dict(), sys.argv[1])\n"
    )
    ckpt = tmp_path / "state.pt"
    subprocess.run(
        [sys.executable, str(script), str(ckpt)], check=True, cwd=Path(__file__).parents[1]
    )
    full = [_digest(b) for b in LoffLoader(data, batch_size=8, num_workers=2, seed=7)]
    resumed = LoffLoader(data, batch_size=8, num_workers=1, seed=7)
    resumed.load_state_dict(torch.load(ckpt))
    assert [_digest(b) for b in resumed] == full[3:]


def test_views_drop_last_extras_and_dtype(data):
    config = LoaderConfig(stream=StreamConfig(batch_size=8, drop_last=True), return_extras=True)
    loader = LoffLoader(data, config, num_workers=0, views=3, dtype=torch.bfloat16)
    batches = list(loader)
    assert len(batches) == len(loader) == 6
    x, y, extras = batches[0]
    assert isinstance(batches[0], BatchWithExtras) and x.dtype == torch.bfloat16
    assert x.shape == (24, 8, 4, 4) and y.shape == (24,) and extras["pooled"].shape == (24, 8)
    assert torch.equal(y[0::3], y[1::3]) and not torch.equal(x[0::3], x[1::3])


def test_int8_cache_dequantised_after_transfer(make_dataset):
    root, _ = make_dataset(n=16, shard_size=8, dtype="int8")
    ref, _ = make_dataset(n=16, shard_size=8, dtype="float32", name="ref")
    q = list(LoffLoader(str(root), batch_size=16, num_workers=0, augment=None, shuffle=False))[0]
    f = list(LoffLoader(str(ref), batch_size=16, num_workers=0, augment=None, shuffle=False))[0]
    scale = f.features.abs().amax(dim=(2, 3)) / 127  # per sample and channel
    assert (q.features - f.features).abs().le(scale[:, :, None, None] / 2 + 1e-6).all()


def test_len_is_per_rank_and_equal(data):
    lens = [
        len(LoffLoader(data, batch_size=5, num_workers=3, rank=r, world_size=3)) for r in range(3)
    ]
    assert lens == [4, 4, 4]  # ceil(52 / 3) = 18 samples -> 4 batches of 5


def test_short_training_loop_learns(make_dataset):
    root, manifest = make_dataset(n=96, shard_size=32, classes=2, dtype="float32")
    # make the label learnable: shift channel 1 by the class
    loader = LoffLoader(str(root), batch_size=16, num_workers=0, augment="none")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8 * 16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    losses = []
    for epoch in range(4):
        loader.set_epoch(epoch)
        for x, y in loader:
            x = x.clone()
            x[:, 0, 0, 0] = 0  # synthetic_samples stores the sample index there
            x[:, 1] += 3.0 * y[:, None, None].float()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert np.mean(losses[-6:]) < 0.5 * np.mean(losses[:6])


def _children() -> set[int]:
    me, kids = os.getpid(), set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == me:
                kids.add(int(pid))
    return kids


def _shm(pids: set[int]) -> set[str]:
    """Shared-memory files of these processes (torch names them ``torch_<pid>_...``): the
    ones this test's loader made, whatever else the machine does meanwhile."""
    names = os.listdir("/dev/shm") if os.path.isdir("/dev/shm") else []
    return {n for n in names if any(f"_{p}_" in n or n.endswith(f"_{p}") for p in pids)}


def _dead(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie not yet reaped, or gone): SIGCHLD was sent."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _wait_no_children(before: set[int], timeout: float = 10.0) -> set[int]:
    deadline = time.time() + timeout
    while (extra := _children() - before) and time.time() < deadline:
        time.sleep(0.1)
    return extra


def test_break_leaves_no_workers_or_shared_memory(data):
    before = _children()
    loader = LoffLoader(data, batch_size=4, num_workers=2)
    for i, _ in enumerate(loader):
        if i == 1:
            workers = _children() - before
            assert len(workers) == 2
            break
    assert _wait_no_children(before) == set() and _shm(workers | {os.getpid()}) == set()


def test_exception_in_step_leaves_no_workers(data):
    before = _children()
    with pytest.raises(RuntimeError, match="step failed"):
        for _ in LoffLoader(data, batch_size=4, num_workers=2):
            raise RuntimeError("step failed")
    assert _wait_no_children(before) == set()


@pytest.mark.parametrize(
    "pause", [False, True], ids=["at-once", "after-sigchld"]
)  # next batch at once /
def test_killed_worker_raises_worker_died_error_naming_the_pid(data, pause):  # after the child died
    before = _children()
    loader = LoffLoader(data, LoaderConfig(prefetch_factor=1), batch_size=4, num_workers=2)
    killed = None
    with pytest.raises(WorkerDiedError) as info:
        for i, _ in enumerate(loader):
            if i == 0:
                killed = min(_children() - before)
                os.kill(killed, signal.SIGKILL)
                while pause and not _dead(killed):  # SIGCHLD sent; its handler runs in this loop
                    time.sleep(0.01)
    assert killed in info.value.pids and f"pid {killed} (killed by SIGKILL)" in str(info.value)
    assert isinstance(
        info.value, RuntimeError
    )  # what torch raised before, still caught the same way
    assert _wait_no_children(before) == set()


def test_worker_error_names_worker_shard_and_key(make_dataset):
    root, manifest = make_dataset(n=24, shard_size=12)
    path = root / manifest.shards[1].name
    data = bytearray(path.read_bytes())
    data[512] = 0xC1  # "never used" msgpack byte: the first member of the shard is undecodable
    path.write_bytes(bytes(data))
    with pytest.raises(Exception, match=r"(?s)worker process.*shard-000001\.tar.*s0000012"):
        list(LoffLoader(str(root), batch_size=4, num_workers=2, shuffle=False))


def test_persistent_workers_give_the_same_epochs_and_resume(data):
    def epochs(loader, n=3):
        out = []
        for epoch in range(n):
            loader.set_epoch(epoch)
            out.append([_digest(b) for b in loader])
        return out

    before = _children()
    plain = epochs(
        LoffLoader(
            data, LoaderConfig(persistent_workers=False), batch_size=8, num_workers=2, seed=4
        )
    )
    persistent = LoffLoader(
        data, LoaderConfig(persistent_workers=True), batch_size=8, num_workers=2, seed=4
    )
    assert epochs(persistent) == plain
    assert len(_children() - before) == 2  # the same two workers stay between passes
    persistent.set_epoch(1)
    it = iter(persistent)
    head = [_digest(next(it)) for _ in range(3)]
    state = persistent.state_dict()
    del it
    persistent.load_state_dict(state)
    assert head + [_digest(b) for b in persistent] == plain[1]
    persistent.close()
    assert _wait_no_children(before) == set()


def _received(monkeypatch, what) -> list:
    """``what(host)`` of every batch dict the loader receives from a worker, in order."""
    seen, from_worker = [], LoadedBatch.from_worker

    def spy(host, mapped):
        seen.append(what(host))
        return from_worker(host, mapped)

    monkeypatch.setattr(LoadedBatch, "from_worker", staticmethod(spy))
    return seen


@pytest.mark.parametrize(
    "dtype", [torch.float16, torch.float32]
)  # read straight into rows / converted
def test_pooled_batches_come_back_by_reference_with_the_right_data(data, dtype, monkeypatch):
    loader = LoffLoader(data, batch_size=4, num_workers=2, augment=None, seed=2, dtype=dtype)
    refs = _received(monkeypatch, lambda host: bool(host.get("ref")))
    for epoch in range(3):
        loader.set_epoch(epoch)
        seen = []
        for x, y in loader:
            index = x[:, 0, 0, 0].long()
            assert torch.equal(y, index % 4)  # labels and features of the same samples
            seen += index.tolist()
        assert sorted(seen) == list(range(52))
    # the pooled buffers are preallocated here before the workers are forked (a SharedArena):
    # every batch comes by reference, from the first one on
    assert refs and all(refs)
    loader.close()


@pytest.mark.parametrize(
    "augment", ["loffta", "none", {"preset": "frofa", "noise": 1.0, "normalize": True}], ids=str
)
def test_training_on_a_cache_with_constant_channels(tmp_path, augment):
    """Dead channels (std 0, as in ReLU CNN features) train through every kind of preset."""
    rng = np.random.default_rng(0)

    def samples():
        for i in range(48):
            x = rng.standard_normal((6, 4, 4)).astype(np.float32)
            x[1], x[4] = 0.0, 2.5  # constant channels
            yield f"k{i:04d}", x, i % 2

    manifest = write_dataset(
        str(tmp_path / "dead"),
        samples(),
        config=WriterConfig(max_samples=16, dtype="float16"),
        classes=["a", "b"],
    )
    assert (manifest.stats.std == 0).sum() == 2
    loader = LoffLoader(
        str(tmp_path / "dead"), batch_size=8, num_workers=0, augment=augment, seed=0
    )
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6 * 16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for x, y in loader:
        assert torch.isfinite(x).all()
        loss = torch.nn.functional.cross_entropy(model(x.float()), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loader.stats.batches == 6 and torch.isfinite(loss)


def test_mixing_unlabelled_samples_is_a_value_error_before_the_device(tmp_path):
    items = (
        (f"u{i:03d}", np.ones((2, 3, 3), np.float32), None if i == 5 else i % 2) for i in range(12)
    )
    write_dataset(
        str(tmp_path / "u"), items, config=WriterConfig(max_samples=6), classes=["a", "b"]
    )
    loader = LoffLoader(
        str(tmp_path / "u"),
        batch_size=4,
        num_workers=0,
        augment={"mixup": 1.0, "num_classes": 2},
        shuffle=False,
    )
    with pytest.raises(ValueError, match=r"(?s)1 unlabelled.*u005"):
        list(loader)


def test_wait_time_includes_the_device_step(data):
    """``stats.wait_s`` covers dequantisation and augmentation, not only the workers."""
    loader = LoffLoader(data, batch_size=8, num_workers=0, augment="loffta")
    inner = loader._augmenter

    def slow(*args, **kwargs):
        time.sleep(0.05)
        return inner(*args, **kwargs)

    loader._augmenter = slow
    assert len(list(loader)) == 7 and loader.stats.wait_s >= 7 * 0.05


def test_transfer_selection():
    cuda, cpu, gpu = torch.device("cuda", 0), torch.device("cpu"), StandInCuda()
    assert select_transfer(cpu, "auto") == select_transfer(None, "register") == "none"
    assert (
        select_transfer(gpu, "auto") == select_transfer(cuda, "auto") == "pin-thread"
    )  # the well-trodden default
    assert select_transfer(gpu, "pin-thread") == "pin-thread"
    assert select_transfer(gpu, "register") == "register"  # only when asked for
    with pytest.raises(ValueError, match="transfer must be"):
        select_transfer(gpu, "zero-copy")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cudaHostRegister"):
            select_transfer(cuda, "register")


def test_only_short_batches_cross_as_shared_memory_handles(data, monkeypatch):
    loader = LoffLoader(data, batch_size=8, num_workers=2, augment=None, seed=3)  # 52 = 6 x 8 + 4
    refs = _received(monkeypatch, lambda host: (bool(host.get("ref")), len(host["key"])))
    seen = [i for x, _ in loader for i in x[:, 0, 0, 0].long().tolist()]
    assert sorted(seen) == list(range(52))
    assert sorted(refs) == [(False, 4)] + [(True, 8)] * 6
    arena = loader.dataset.batch_arena
    assert list(loader) and loader.dataset.batch_arena is arena  # one arena while the workers live
    loader.close()
    assert (
        loader.dataset.batch_arena is None and loader._buffers.mapped == {}
    )  # dropped with the workers
