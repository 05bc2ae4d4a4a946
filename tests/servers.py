"""Loopback servers for the streaming tests: a fault-injecting HTTP server and moto S3.

The fixtures ``http_server`` and ``s3_server`` are registered for every test in
tests/conftest.py; importing them here (``from tests.servers import http_server, s3_server
# noqa: F401``) still works. Both run once per session (per xdist worker): ``http_server`` is
the session's :func:`http_origin` reset for each test (fresh root, no faults, no latency, an
empty request log); ``s3_server`` is the session's :func:`moto_s3`.

:class:`FaultyHTTPServer` is also the *cloud simulator* of the benchmarks: with
``latency`` (seconds to first byte of every request) and ``conn_bytes_per_s`` (a bandwidth
cap per connection; the aggregate is not capped) it behaves like an object store seen from
a GPU node, and it counts the requests in flight (``in_flight``, ``peak_in_flight``).
Answers carry ``ETag`` and ``Last-Modified``; ``If-Match`` is honoured (412).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from loffdata.format.writer import WriterConfig, write_dataset

__all__ = [
    "PEAK_PATH",
    "Faults",
    "FaultyHTTPServer",
    "S3Server",
    "http_origin",
    "http_server",
    "moto_s3",
    "s3_server",
    "make_items",
    "write_shards",
    "write_uneven",
]

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")
#: GET this path for the peak of requests in flight since the last such GET (itself excluded)
PEAK_PATH = "/__peak_in_flight__"


def make_items(
    n: int, *, shape=(4, 3, 3), offset: int = 0, classes: int = 3, extras: bool = False
) -> list[tuple]:
    """``n`` samples; sample ``i`` has key ``s{i:05d}``, features all equal to ``i``, label
    ``i % classes``."""
    out = []
    for i in range(offset, offset + n):
        item = (f"s{i:05d}", np.full(shape, i, dtype=np.float32), i % classes)
        out.append((*item, {"pooled": np.full((shape[0],), i, np.float32)}) if extras else item)
    return out


def write_shards(
    root: Path, n: int, per_shard: int, *, dtype: str | None = "float16", **kwargs
) -> Path:
    """Writes ``make_items(n, **kwargs)`` in shards of ``per_shard`` under ``root``; returns
    ``root``."""
    write_dataset(
        str(root), make_items(n, **kwargs), config=WriterConfig(max_samples=per_shard, dtype=dtype)
    )
    return root


def write_uneven(root: Path, sizes: list[int], **kwargs) -> Path:
    """Writes one shard per entry of ``sizes`` (samples numbered on across shards), one manifest."""
    manifest, offset = None, 0
    for i, n in enumerate(sizes):
        part = write_dataset(
            str(root / f"part{i}"),
            make_items(n, offset=offset, **kwargs),
            config=WriterConfig(prefix=f"p{i}", max_samples=n),
        )
        for p in (root / f"part{i}").glob("*.tar"):
            p.rename(root / p.name)
        manifest = part if manifest is None else manifest
        if i:
            manifest.shards += part.shards
        offset += n
    manifest.save(str(root))
    return root


@dataclass
class Faults:
    """Faults to inject, by file name (the last path component).

    Attributes:
        statuses: answer the next GETs of a file with these statuses, one each, in turn.
        drop_after: the first GET of a file whose range covers this byte offset sends the
            bytes before it, then closes the connection (fewer bytes than Content-Length).
        stall: the next GETs of a file wait this many seconds before answering (a server
            that stopped responding), one GET per entry, in turn.
        replace: ``(n, path)``: before serving the ``n``-th GET of a file (counted from 1),
            the file is replaced by a copy of ``path`` (a new object version, same name).
        gather: hold every GET of a ``gate_suffix`` file (``.tar``) until this many requests
            are in flight at once (then the gate stays open; 0: no gate). A client that
            keeps that many requests in flight gets its answers at once; one that does not
            waits ``gather_timeout`` seconds, and ``peak_in_flight`` and ``gate_met`` show
            it. Overlap as a state, not as latency luck.
        gather_timeout: seconds a held request waits for the gate at most.
        gate_suffix: the files whose GETs the gate holds (``.idx``: sidecars).
        gate_met: whether the gate opened because ``gather`` requests were in flight
            (``False``: it gave up waiting).
    """

    statuses: dict[str, list[int]] = field(default_factory=dict)
    drop_after: dict[str, int] = field(default_factory=dict)
    stall: dict[str, list[float]] = field(default_factory=dict)
    replace: dict[str, tuple[int, str]] = field(default_factory=dict)
    gather: int = 0
    gather_timeout: float = 30.0
    gate_suffix: str = ".tar"
    gate_met: bool = False


class FaultyHTTPServer(ThreadingHTTPServer):
    """Serves a directory over HTTP/1.1 on 127.0.0.1 with Range support and injectable faults.

    Args:
        root: the directory served.
        latency: seconds every request waits before its answer starts (time to first byte).
        conn_bytes_per_s: bytes per second each connection may send (``None``: no cap).
    """

    daemon_threads = True
    request_queue_size = 128  # many connections opened at once by a prefetching client

    def __init__(self, root: str, *, latency: float = 0.0, conn_bytes_per_s: float | None = None):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root, self.latency, self.conn_bytes_per_s = root, latency, conn_bytes_per_s
        self.faults = Faults()
        self.requests: list[tuple[str, str, str | None]] = []  # (method, file name, Range)
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)  # notified when a request comes in
        self.stopping = threading.Event()  # ends stalls when the server shuts down
        self.in_flight = 0  # requests received and not yet fully answered
        self.prefix = ""  # the URL path the server answers under ("/t3": the session's 3rd test)
        self.peak_in_flight = 0

    def handle_error(self, request, client_address) -> None:
        """Quiet about clients that hung up (a client giving up on a stalled answer)."""
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)

    def reset_peak(self) -> int:
        """The peak of requests in flight so far; starts counting afresh."""
        with self.lock:
            peak, self.peak_in_flight = self.peak_in_flight, self.in_flight
        return peak

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{self.prefix}"

    def gets(self, name: str) -> list[str | None]:
        """Range headers of the GETs of file ``name`` so far."""
        return [r for m, n, r in self.requests if m == "GET" and n == name]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FaultyHTTPServer

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no 40 ms stalls

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, *, head: bool) -> None:
        srv = self.server
        if not self.path.startswith(srv.prefix + "/"):
            return self._send_status(404, head=head)  # a client left from an earlier test
        self.path = self.path[len(srv.prefix) :]
        with srv.lock:
            srv.in_flight += 1
            srv.peak_in_flight = max(srv.peak_in_flight, srv.in_flight)
            srv.arrived.notify_all()
        try:
            self._gather()
            self._answer(head=head)
        finally:
            with srv.lock:
                srv.in_flight -= 1

    def _gather(self) -> None:
        """Holds a GET of a shard until ``faults.gather`` requests are in flight (then opens)."""
        srv = self.server
        suffix = srv.faults.gate_suffix
        if self.command != "GET" or not self.path.split("?", 1)[0].endswith(suffix):
            return
        with srv.lock:
            want = srv.faults.gather
            if want:  # open once enough are in flight; a later waiter then passes too
                srv.arrived.wait_for(
                    lambda: srv.in_flight >= want or not srv.faults.gather,
                    timeout=srv.faults.gather_timeout,
                )
                if srv.faults.gather:
                    srv.faults.gate_met = srv.in_flight >= want
                    srv.arrived.notify_all()
                srv.faults.gather = 0  # reached (or given up) once: every later request passes

    def _answer(self, *, head: bool) -> None:
        srv, faults = self.server, self.server.faults
        if self.path == PEAK_PATH:  # for benchmarks with the server in another process
            return self._send_status(200, body=str(srv.reset_peak() - 1).encode())
        name = self.path.split("?", 1)[0].rsplit("/", 1)[-1]
        rng = self.headers.get("Range")
        p = Path(srv.root, self.path.split("?", 1)[0].lstrip("/"))
        with srv.lock:
            srv.requests.append(("HEAD" if head else "GET", name, rng))
            queued = faults.statuses.get(name)
            status = queued.pop(0) if queued and not head else None
            stalls = faults.stall.get(name)
            stall = stalls.pop(0) if stalls and not head else 0.0
            if (
                not head
                and name in faults.replace
                and faults.replace[name][0] == len(self.server.gets(name))
            ):
                _replace(p, faults.replace.pop(name)[1])
        if srv.latency or stall:
            srv.stopping.wait(srv.latency + stall)
        if status is not None:
            return self._send_status(status)
        if not p.is_file():
            return self._send_status(404, head=head)
        self._send_file(p, rng, head=head, name=name)

    def _send_status(self, status: int, *, head: bool = False, body: bytes | None = None) -> None:
        body = f"status {status}".encode() if body is None else body
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _send_file(self, p: Path, rng: str | None, *, head: bool, name: str) -> None:
        with open(p, "rb") as f:  # one open file: size, version and bytes of one object
            st = os.fstat(f.fileno())
            size, etag = st.st_size, f'"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"'
            if self.headers.get("If-Match") not in (None, "*", etag):
                return self._send_status(412)
            start, end = 0, size
            m = _RANGE.fullmatch(rng or "")
            if m:
                start, end = int(m.group(1)), min(size, int(m.group(2)) + 1 if m.group(2) else size)
                if start >= size:
                    return self._send_status(416)
            self.send_response(206 if m else 200)
            self.send_header("Content-Length", str(end - start))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", formatdate(st.st_mtime, usegmt=True))
            if m:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
            self.end_headers()
            if not head:
                self._write_body(f, start, end, name)

    def _write_body(self, f, start: int, end: int, name: str) -> None:
        with self.server.lock:
            drop = self.server.faults.drop_after.get(name)
            if drop is not None and start <= drop < end:
                del self.server.faults.drop_after[name]
            else:
                drop = None
        self._paced(f, start, end if drop is None else drop)
        if drop is not None:
            self.close_connection = True

    def _paced(self, f, start: int, end: int) -> None:
        """Sends bytes ``[start, end)`` of ``f`` (``sendfile``), no faster than the cap."""
        rate, sock = self.server.conn_bytes_per_s, self.connection
        t0, pos, step = (
            time.perf_counter(),
            start,
            (256 << 10) if self.server.conn_bytes_per_s else (8 << 20),
        )
        while pos < end:
            sent = os.sendfile(sock.fileno(), f.fileno(), pos, min(step, end - pos))
            if sent == 0:
                break
            pos += sent
            ahead = t0 + (pos - start) / rate - time.perf_counter() if rate else 0
            if ahead > 0:
                time.sleep(ahead)


def _replace(p: Path, source: str) -> None:
    """Replaces ``p`` by a copy of ``source`` atomically (a new inode: a new version)."""
    tmp = p.with_name(p.name + ".new")
    tmp.write_bytes(Path(source).read_bytes())
    os.replace(tmp, p)


@contextlib.contextmanager
def serving(root: Path) -> Iterator[FaultyHTTPServer]:
    """A fault-injecting server over ``root``, in a thread, while the block runs."""
    server = FaultyHTTPServer(str(root))
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def http_origin(tmp_path_factory):
    """ONE fault-injecting server per session (per xdist worker); tests take :func:`http_server`."""
    with serving(tmp_path_factory.mktemp("www-origin")) as server:
        yield server


def _fresh(server: FaultyHTTPServer, root: Path) -> FaultyHTTPServer:
    """Points the session's server at ``root`` under a new URL prefix (clients left from an
    earlier test get 404s, unlogged, uncounted) and forgets what earlier tests set or asked."""
    old = server.stopping
    server.stopping = threading.Event()
    old.set()  # stalls injected by an earlier test end now
    with server.lock:
        server.root, server.latency, server.conn_bytes_per_s = str(root), 0.0, None
        server.faults, server.requests = Faults(), []
        server.prefix = f"/t{int(server.prefix[2:] or 0) + 1}"  # stale clients get 404s
        server.peak_in_flight = server.in_flight
    return server


@pytest.fixture
def http_server(http_origin, tmp_path):
    """The session's server, serving a fresh ``tmp_path / "www"``, with no faults, latency or
    request log left from an earlier test; yields the server."""
    root = tmp_path / "www"
    root.mkdir()
    if http_origin.in_flight:  # an earlier test left requests running: a server of its own
        with serving(root) as server:
            yield server
        return
    yield _fresh(http_origin, root)
    http_origin.stopping.set()  # no stall outlives its test


@dataclass
class S3Server:
    """A running moto S3 server: its endpoint and the storage options that reach it."""

    endpoint: str

    @property
    def storage_options(self) -> dict:
        return {"client_kwargs": {"endpoint_url": self.endpoint}}

    def filesystem(self):
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, **self.storage_options)

    def upload(self, local: Path, bucket: str, prefix: str) -> str:
        """Copies the files of a local directory to ``s3://bucket/prefix``; returns that URL."""
        fs = self.filesystem()
        if not fs.exists(bucket):
            fs.mkdir(bucket)
        for p in sorted(local.iterdir()):
            fs.put_file(str(p), f"{bucket}/{prefix}/{p.name}")
        return f"s3://{bucket}/{prefix}"


_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def moto_s3():
    """moto's S3 on 127.0.0.1, ONE per session (per xdist worker), with dummy credentials in
    the environment. Registered in tests/conftest.py; tests take :func:`s3_server`."""
    from moto.server import ThreadedMotoServer

    saved = {k: os.environ.get(k) for k in _AWS_ENV}
    os.environ.update(_AWS_ENV)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Server(endpoint=f"http://{host}:{port}")
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def s3_server(moto_s3):
    """The session's moto S3 (:func:`moto_s3`): a module importing this name shares it. Each
    test uses its own bucket or prefix (``upload(..., prefix=request.node.name)``)."""
    return moto_s3
