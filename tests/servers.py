"""Loopback servers for the streaming tests: a fault-injecting HTTP server and moto S3.

Use the fixtures in a test module with
``from tests.servers import http_server, s3_server  # noqa: F401``.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from loffdata.format.writer import WriterConfig, write_dataset

__all__ = [
    "Faults",
    "FaultyHTTPServer",
    "S3Server",
    "http_server",
    "s3_server",
    "make_items",
    "write_shards",
    "write_uneven",
]

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


def make_items(
    n: int, *, shape=(4, 3, 3), offset: int = 0, classes: int = 3, extras: bool = False
) -> list[tuple]:
    """``n`` samples; sample ``i`` has key ``s{i:05d}``, features all equal to ``i``, label ``i % classes``."""
    out = []
    for i in range(offset, offset + n):
        item = (f"s{i:05d}", np.full(shape, i, dtype=np.float32), i % classes)
        out.append((*item, {"pooled": np.full((shape[0],), i, np.float32)}) if extras else item)
    return out


def write_shards(
    root: Path, n: int, per_shard: int, *, dtype: str | None = "float16", **kwargs
) -> Path:
    """Writes ``make_items(n, **kwargs)`` in shards of ``per_shard`` under ``root``; returns ``root``."""
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
    """

    statuses: dict[str, list[int]] = field(default_factory=dict)
    drop_after: dict[str, int] = field(default_factory=dict)


class FaultyHTTPServer(ThreadingHTTPServer):
    """Serves a directory over HTTP/1.1 on 127.0.0.1 with Range support and injectable faults."""

    daemon_threads = True

    def __init__(self, root: str):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.faults = Faults()
        self.requests: list[tuple[str, str, str | None]] = []  # (method, file name, Range)
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

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
        name = self.path.split("?", 1)[0].rsplit("/", 1)[-1]
        rng = self.headers.get("Range")
        with self.server.lock:
            self.server.requests.append(("HEAD" if head else "GET", name, rng))
            queued = self.server.faults.statuses.get(name)
            status = queued.pop(0) if queued and not head else None
        if status is not None:
            return self._send_status(status)
        p = Path(self.server.root, self.path.split("?", 1)[0].lstrip("/"))
        if not p.is_file():
            return self._send_status(404, head=head)
        self._send_file(p, rng, head=head, name=name)

    def _send_status(self, status: int, *, head: bool = False) -> None:
        body = f"status {status}".encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _send_file(self, p: Path, rng: str | None, *, head: bool, name: str) -> None:
        size = p.stat().st_size
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
        if m:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        if not head:
            self._write_body(p, start, end, name)

    def _write_body(self, p: Path, start: int, end: int, name: str) -> None:
        with open(p, "rb") as f:
            f.seek(start)
            data = f.read(end - start)
        with self.server.lock:
            drop = self.server.faults.drop_after.get(name)
            if drop is not None and start <= drop < end:
                del self.server.faults.drop_after[name]
            else:
                drop = None
        if drop is None:
            self.wfile.write(data)
            return
        self.wfile.write(data[: drop - start])
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture
def http_server(tmp_path):
    """A fresh fault-injecting server over ``tmp_path / "www"``; yields the server."""
    root = tmp_path / "www"
    root.mkdir()
    server = FaultyHTTPServer(str(root))
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


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
def s3_server():
    """moto's S3 on 127.0.0.1 (one per session), with dummy credentials in the environment."""
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
