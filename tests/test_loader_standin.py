"""LoffLoader(device=<strict CUDA stand-in>) end to end, on the CPU (loffdata/loader/device.py).

Each batch must equal, bit for bit, what the CPU loader delivers: a copy that the consumer's
stream did not wait for still holds poison (NaN, -99); ``record_stream`` of a host tensor
(the ``index``) raises as ``aten::record_stream`` does; registrations must balance.
"""

from __future__ import annotations

import gc
import hashlib
import os
import signal
import time

import pytest
import torch

from loffdata.errors import WorkerDiedError
from loffdata.loader import LoffLoader
from loffdata.loader.batch import HostRegistry, LoadedBatch
from loffdata.loader.device import OnDevice, StandInCuda
from loffdata.loader.loaderconfig import LoaderConfig
from loffdata.loader.multiscale import MultiScaleConfig, MultiScaleLoader
from loffdata.stream.mix import Mix
from tests.resume_helpers import assert_resumes_exactly

TRANSFERS = ["pin-thread", "register"]


def _digest(batch) -> str:
    x = (
        batch.features.as_subclass(torch.Tensor)
        if isinstance(batch.features, OnDevice)
        else batch.features
    )
    h = hashlib.sha1(x.float().numpy().tobytes())
    h.update(torch.as_tensor(batch.labels).as_subclass(torch.Tensor).float().numpy().tobytes())
    return h.hexdigest()


@pytest.fixture
def data(make_dataset):
    root, _ = make_dataset(n=52, shard_size=12, extras=True, classes=4)
    return str(root)


def _loader(source, gpu, transfer, config=None, **kw):
    config = (config or LoaderConfig()).replace(transfer=transfer)
    return LoffLoader(source, config, device=gpu, **kw)


def _same(got, want) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert isinstance(g.features, OnDevice) and not isinstance(w.features, OnDevice)
        assert torch.equal(g.features, w.features) and torch.equal(g.labels, w.labels)
        assert g.keys == w.keys and torch.equal(g.indices, w.indices)


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("transfer", TRANSFERS)
def test_standin_batches_equal_cpu_batches(data, transfer, workers):
    """Fails if the consumer does not wait for the copy's event, or if a host tensor is
    recorded on a stream (issue 27 item 1)."""
    kw = dict(batch_size=8, num_workers=workers, augment="loffta", seed=3)
    want = list(LoffLoader(data, **kw))
    gpu = StandInCuda()
    loader = _loader(data, gpu, transfer, **kw)
    for epoch in range(2):  # the second pass reuses the pooled (and registered) buffers
        loader.set_epoch(epoch)
        got = list(loader)
        if epoch == 0:
            _same(got, want)
    assert sorted(i for b in got for i in b.indices.tolist()) == list(range(52))
    registry = loader._registry
    assert registry.failures == [] and registry.errors == []
    if transfer == "register" and workers:
        assert gpu.register_calls > 0  # the pooled buffers were page-locked in place
    loader.close()
    assert gpu.registered == {} and gpu.register_calls == gpu.unregister_calls


@pytest.mark.parametrize("transfer", TRANSFERS)
def test_standin_int8_views_and_extras(make_dataset, transfer):
    root, _ = make_dataset(n=30, shard_size=10, dtype="int8", extras=True, classes=3)
    kw = dict(batch_size=6, num_workers=2, augment="loffta", views=2, seed=1)
    cfg = LoaderConfig(return_extras=True)
    want = list(LoffLoader(str(root), cfg, **kw))
    got = list(_loader(str(root), StandInCuda(), transfer, config=cfg, **kw))
    _same(got, want)
    assert got[0].features.shape[0] == 12 and len(got[0].keys) == 12  # two views per sample
    assert all(torch.equal(g.extras["pooled"], w.extras["pooled"]) for g, w in zip(got, want))


def test_standin_mixed_sources_and_multiscale(make_dataset):
    a, _ = make_dataset(n=20, shard_size=10, name="a", classes=3)
    b, _ = make_dataset(n=12, shard_size=6, name="b", classes=3)
    kw = dict(batch_size=4, num_workers=2, augment=None, seed=2)
    mix = Mix([str(a), str(b)])
    _same(list(_loader(mix, StandInCuda(), "register", **kw)), list(LoffLoader(mix, **kw)))
    ms = MultiScaleConfig(grids=(4, 2), base_chunks=1, seed=5)
    want = [x for x, _ in MultiScaleLoader(LoffLoader(str(a), **kw), ms)]
    got = [x for x, _ in MultiScaleLoader(_loader(str(a), StandInCuda(), "pin-thread", **kw), ms)]
    assert [g.shape for g in got] == [w.shape for w in want]
    assert all(torch.equal(g, w) for g, w in zip(got, want))


@pytest.mark.parametrize("transfer", TRANSFERS)
def test_standin_resume_mid_epoch(data, transfer):
    def make():
        loader = _loader(
            data, StandInCuda(), transfer, batch_size=8, num_workers=2, augment="loffta", seed=4
        )
        loader.set_epoch(1)
        return loader

    assert_resumes_exactly(make, stops=[0, 2, 5], key=_digest)


def test_standin_steady_state_makes_no_host_sync(data):
    """Views and mixing on, second pass (workers, buffers and registrations warm): the
    loader makes no host sync at all, per batch or otherwise."""
    spec = {"preset": "loffta", "mixup": 0.5, "cutmix": 0.5, "num_classes": 4}
    cfg = LoaderConfig(persistent_workers=True)
    gpu = StandInCuda()
    loader = _loader(
        data,
        gpu,
        "register",
        config=cfg,
        batch_size=8,
        num_workers=2,
        augment=spec,
        views=2,
        seed=5,
    )
    list(loader)  # warm-up pass
    before, held = gpu.syncs, []
    loader.set_epoch(1)
    for batch in loader:
        held.append(batch)  # nothing read from the device inside the pass
    assert gpu.syncs - before == 0 and len(held) == len(loader) == 7
    assert all(not torch.isnan(b.features).any() for b in held)  # the copies were waited for
    loader.close()
    assert gpu.registered == {}


def test_standin_killed_worker_then_balanced(data):
    gpu = StandInCuda()
    loader = _loader(
        data, gpu, "register", config=LoaderConfig(prefetch_factor=1), batch_size=4, num_workers=2
    )
    with pytest.raises(WorkerDiedError):
        for i, _ in enumerate(loader):
            if i == 0:
                os.kill(loader._it._workers[0].pid, signal.SIGKILL)
    assert gpu.registered == {} and gpu.register_calls == gpu.unregister_calls > 0


def test_standin_drop_without_close_unregisters(data):
    """A finished pass with persistent workers skips close(); dropping the loader must still
    undo every registration (before its buffers are unmapped). Fails without the finalizer."""
    gpu = StandInCuda()
    loader = _loader(
        data,
        gpu,
        "register",
        config=LoaderConfig(persistent_workers=True),
        batch_size=8,
        num_workers=2,
        augment=None,
    )
    assert len(list(loader)) == 7 and loader._it is not None  # not closed: workers persist
    assert len(gpu.registered) > 0
    del loader
    gc.collect()
    assert gpu.registered == {} and gpu.register_calls == gpu.unregister_calls


def test_standin_refused_registration_clears_the_error_and_falls_back(data):
    """A refused cudaHostRegister leaves an error set; the next copy fails unless it is cleared."""
    gpu = StandInCuda(fail_register=1)
    kw = dict(batch_size=8, num_workers=2, augment=None, seed=6)
    loader = _loader(data, gpu, "register", **kw)
    _same(list(loader), list(LoffLoader(data, **kw)))
    assert len(loader._registry.failures) == 1 and "returned 2" in loader._registry.failures[0]
    loader.close()
    assert gpu.registered == {} and gpu.register_calls > 1  # the other buffers were registered


def test_persistent_worker_killed_idle_between_epochs_is_worker_died_error(data):
    loader = LoffLoader(
        data, LoaderConfig(persistent_workers=True), batch_size=8, num_workers=2, augment=None
    )
    assert len(list(loader)) == 7
    pid = loader._it._workers[0].pid
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while loader._it._workers[0].exitcode is None and time.monotonic() < deadline:
        time.sleep(0.05)  # waits for the state (the worker reaped), not for time
    with pytest.raises(WorkerDiedError) as info:
        list(loader)
    assert pid in info.value.pids
    loader.close()


# -- the stand-in's own rules ---------------------------------------------------------------


def test_standin_rules():
    gpu, host = StandInCuda(), torch.arange(6.0)
    with pytest.raises(RuntimeError, match="pageable"):
        gpu.copy(host)
    side, pinned = gpu.stream(), gpu.pin(host)
    with gpu.use(side):
        dev = gpu.copy(pinned)
        done = gpu.event()
        gpu.record(done, side)
    assert torch.isnan(dev.as_subclass(torch.Tensor)).all() and not gpu.query(done)  # not run yet
    gpu.wait(gpu.current_stream(), done)
    assert gpu.query(done) and torch.equal(dev, host)
    with pytest.raises(NotImplementedError, match="record_stream"):
        gpu.record_stream(host, side)
    gpu.record_stream(dev * 2, side)  # results of device tensors are on the device
    before = gpu.syncs
    dev.sum().item()
    assert gpu.syncs == before + 1 and not isinstance(dev.cpu(), OnDevice)
    assert (
        gpu.host_register(host.data_ptr(), 24) == 0 and gpu.host_register(host.data_ptr(), 8) == 712
    )
    assert gpu.last_error() == 712 and gpu.last_error() == 0
    assert gpu.host_unregister(host.data_ptr()) == 0 and gpu.host_unregister(host.data_ptr()) == 713
    gpu.last_error()


def test_unregister_refused_while_a_copy_reads_and_codes_are_recorded():
    gpu, host = StandInCuda(), torch.arange(8.0)
    registry = HostRegistry(gpu)
    assert registry.register(host)
    side = gpu.stream()
    with gpu.use(side):
        gpu.copy(host)
    with pytest.raises(RuntimeError, match="still reads"):
        registry.forget([host])
    registry.clear()  # synchronizes first, then unregisters
    assert gpu.registered == {} and registry.errors == []
    registry._ptrs[host.untyped_storage().data_ptr()] = 32  # a registration CUDA does not know
    registry.clear()
    assert (
        len(registry.errors) == 1 and "returned 713" in registry.errors[0] and gpu.last_error() == 0
    )


def test_loaded_batch_keeps_control_data_out_of_the_payload():
    raw = {
        "features": torch.zeros(2, 3),
        "label": torch.zeros(2, dtype=torch.int64),
        "index": torch.tensor([4, 9]),
        "key": ["a", "b"],
        "slot": (0, 1),
    }
    batch = LoadedBatch.from_worker(raw, mapped={})
    assert (
        set(batch.payload) == {"features", "label"}
        and batch.keys == ["a", "b"]
        and batch.slot == (0, 1)
    )
    assert batch.indices.tolist() == [4, 9]
