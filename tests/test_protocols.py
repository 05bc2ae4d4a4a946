"""loffdata/protocols.py: a store is its table entry, and every reader of the table obeys it.

The stores of the table run against real servers elsewhere (HTTP: tests/servers.py's
loopback origin; S3: moto in server mode; tests/storage/, tests/stream/). Here a made-up
store, declared only by an entry over fsspec's in-memory filesystem, is read, pinned,
retried, listed and written the way its entry says.
"""

from __future__ import annotations

import asyncio

import fsspec
import pytest

from loffdata import protocols
from loffdata.format.index import check_writable
from loffdata.format.writer import write_sidecar
from loffdata.protocols import PROTOCOLS, Answer, Protocol, of_filesystem, of_url
from loffdata.storage import retry as retry_module
from loffdata.storage.pinned import ObjectChanged, Pin, fetch_range
from loffdata.storage.retry import RetryConfig, is_transient
from loffdata.storage.shardfile import filesystem
from loffdata.stream.discover import expand_glob


class StoreError(Exception):
    """What the made-up store's client raises: an error code in a botocore-like response."""

    def __init__(self, code: str):
        super().__init__(code)
        self.response = {"Error": {"Code": code}}


class MadeUpStore:
    """A store with versions and preconditions, over fsspec's memory filesystem."""

    def __init__(self):
        self.version, self.sent, self.options = "v1", [], []

    async def ranged_get(self, fs, path, start, end, etag):
        self.sent.append(etag)
        if etag is not None and etag != self.version:
            raise StoreError("ConditionNotMet")
        return Answer(fs.cat_file(path, start=start, end=end), fs.size(path), self.version)

    def entry(self) -> Protocol:
        return Protocol(
            names=("memory",),
            options=lambda options, retry: self.options.append(retry) or options,
            ranged_get=self.ranged_get,
            error_code=lambda e: getattr(e, "response", {}).get("Error", {}).get("Code"),
            transient_codes=frozenset({"TooBusy"}),
            changed_codes=frozenset({"ConditionNotMet"}),
            lists=False,
            writable=False,
            atomic_writes=True,
        )


@pytest.fixture
def store(monkeypatch):
    made_up = MadeUpStore()
    entry = made_up.entry()
    monkeypatch.setitem(protocols._BY_NAME, "memory", entry)
    monkeypatch.setattr(retry_module, "PROTOCOLS", (*PROTOCOLS, entry))
    fs = fsspec.filesystem("memory")
    fs.pipe("/madeup/obj", bytes(range(200)))
    yield made_up, fs
    fs.rm("/madeup", recursive=True)


def test_reads_go_through_the_entry_and_are_pinned_to_the_first_version(store):
    made_up, fs = store
    pin = Pin("memory://madeup/obj")
    assert asyncio.run(fetch_range(fs, "/madeup/obj", 10, 20, pin)) == bytes(range(10, 20))
    assert asyncio.run(fetch_range(fs, "/madeup/obj", 20, 25, pin)) == bytes(range(20, 25))
    assert made_up.sent == [None, "v1"] and pin.version.size == 200
    made_up.version = "v2"  # replaced under the reader: the precondition fails, named
    with pytest.raises(ObjectChanged, match="changed while being read"):
        asyncio.run(fetch_range(fs, "/madeup/obj", 25, 30, pin))


def test_its_error_codes_its_options_its_listing_and_its_writes_are_the_entrys(store):
    made_up, fs = store
    assert is_transient(StoreError("TooBusy")) and not is_transient(StoreError("NoSuchThing"))
    retry = RetryConfig(timeout=3.0)
    assert of_filesystem(filesystem("memory://madeup/obj", {}, retry)[0]).names == ("memory",)
    assert made_up.options == [retry]
    with pytest.raises(ValueError, match="MEMORY servers cannot be listed"):
        expand_glob("memory://madeup/*.tar")
    with pytest.raises(Exception, match="MEMORY cannot be written"):
        check_writable("memory://madeup")
    write_sidecar(fs, "/madeup/a.idx", b"index")  # in place: no temporary to rename
    assert fs.cat_file("/madeup/a.idx") == b"index" and fs.ls("/madeup", detail=False) == [
        "/madeup/a.idx",
        "/madeup/obj",
    ]


def test_each_protocol_name_has_one_entry_and_unknown_ones_get_fsspecs_defaults():
    names = [n for p in PROTOCOLS for n in p.names]
    assert len(names) == len(set(names))
    generic = of_url("ftp://host/x.tar")
    assert generic.ranged_get is None and generic.lists and not generic.atomic_writes
    assert of_url("https://h/x").path_is_url and not of_url("s3://b/k").path_is_url
