"""An nginx origin on loopback that behaves like an object store, for the remote benchmarks.

nginx serves a folder with ``sendfile`` and byte ranges, sends ETag and Last-Modified, and
costs almost no CPU (a Python server's per-request CPU would be part of what is measured).
``access_by_lua_block { ngx.sleep(...) }`` gives every request its time to first byte and
``limit_rate`` caps each connection's bandwidth; ``sndbuf`` keeps the cap honest for small
ranges. The Python simulator in ``tests/servers.py`` stays for fault injection in tests.

Usage::

    with NginxOrigin("/tmp/loffdata-bench/4096x768x16x16") as origin:
        print(origin.url)        # http://127.0.0.1:PORT/

    python benchmarks/nginx_origin.py DIR   # serves DIR until Ctrl-C

The Debian packages ``nginx`` and ``libnginx-mod-http-lua`` are installed with apt when
missing (root only); :class:`OriginUnavailable` says why when they cannot be.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

__all__ = ["NginxOrigin", "OriginConfig", "OriginUnavailable", "ensure_nginx"]

MODULES = Path("/usr/lib/nginx/modules")
LUA_MODULES = ("ndk_http_module.so", "ngx_http_lua_module.so")
PACKAGES = ("nginx", "libnginx-mod-http-lua")


class OriginUnavailable(RuntimeError):
    """nginx or its Lua module is missing and cannot be installed here."""


@dataclass(frozen=True)
class OriginConfig:
    """How the origin behaves.

    Attributes:
        latency_s: time to first byte of every request (0: no Lua, no wait).
        conn_bytes_per_s: bandwidth of one connection (0: no cap).
        sndbuf: the listening socket's send buffer, small so that the cap holds.
        access_log: log every request (end time, duration, range, bytes) for
            :meth:`NginxOrigin.requests`, a timeline of what the client asked and when.
    """

    latency_s: float = 0.03
    conn_bytes_per_s: int = 100_000_000
    sndbuf: int = 262_144
    access_log: bool = False


def _nginx() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def _installed() -> bool:
    return _nginx() is not None and all((MODULES / m).is_file() for m in LUA_MODULES)


def ensure_nginx() -> str:
    """The nginx binary, installing the Debian packages non-interactively if missing.

    Raises:
        OriginUnavailable: not installed and apt cannot install it (not root, no apt, offline).
    """
    if _installed():
        return str(_nginx())
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise OriginUnavailable(f"install {' '.join(PACKAGES)} (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *PACKAGES]):
        if _installed():
            break
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if done.returncode and cmd[1] == "install":
            raise OriginUnavailable(f"apt-get install failed: {done.stderr.strip()[-300:]}")
    if not _installed():
        raise OriginUnavailable(f"{' '.join(PACKAGES)} still missing after apt-get install")
    return str(_nginx())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def render_config(root: Path, work: Path, port: int, cfg: OriginConfig) -> str:
    """nginx.conf for serving ``root`` on 127.0.0.1:``port``, every path under ``work``.

    Run as root, the workers run as root too (``user``), so that they can read a 0700 temp
    folder; they only ever serve ``root`` on loopback.
    """
    lua = cfg.latency_s > 0
    modules = "".join(f"load_module {MODULES / m};\n" for m in LUA_MODULES) if lua else ""
    access = f"access_by_lua_block {{ ngx.sleep({cfg.latency_s}) }}" if lua else ""
    rate = f"limit_rate {cfg.conn_bytes_per_s};" if cfg.conn_bytes_per_s else ""
    temps = "".join(
        f"  {name}_temp_path {work / name};\n"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    log = f"{work / 'access.log'} timeline" if cfg.access_log else "off"
    return f"""{modules}{user}worker_processes 1;
daemon off;
pid {work / "nginx.pid"};
error_log {work / "error.log"} warn;
events {{ worker_connections 1024; }}
http {{
  log_format timeline '$msec $request_time $connection $status $bytes_sent $uri $http_range';
  access_log {log};
{temps}  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  etag on;
  default_type application/octet-stream;
  server {{
    listen 127.0.0.1:{port} sndbuf={cfg.sndbuf};
    root {root};
    location / {{
      {access}
      {rate}
    }}
  }}
}}
"""


class NginxOrigin:
    """nginx serving ``root`` on 127.0.0.1, started and stopped as a context manager.

    Args:
        root: the folder served at ``/``.
        config: latency, bandwidth per connection, send buffer.
    """

    def __init__(self, root: str | Path, config: OriginConfig | None = None):
        self.root, self.config = Path(root).resolve(), config or OriginConfig()
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def __enter__(self) -> NginxOrigin:
        binary = ensure_nginx()
        self._work = tempfile.TemporaryDirectory(prefix="loff-nginx-")
        work = Path(self._work.name)
        port = _free_port()
        conf = work / "nginx.conf"
        conf.write_text(render_config(self.root, work, port, self.config))
        log = open(work / "stderr.log", "wb")  # noqa: SIM115 (closed in __exit__)
        self.proc = subprocess.Popen(
            [binary, "-e", str(work / "error.log"), "-p", str(work), "-c", str(conf)],
            stdout=log,
            stderr=log,
        )
        self._log = log
        self.url = f"http://127.0.0.1:{port}/"
        self._wait_ready(work)
        return self

    def _wait_ready(self, work: Path) -> None:
        for _ in range(200):
            if self.proc is not None and self.proc.poll() is not None:
                text = (work / "error.log").read_text(errors="replace")[-500:]
                raise OriginUnavailable(f"nginx exited ({self.proc.returncode}): {text}")
            try:
                with urllib.request.urlopen(self.url + "__loff_ready__", timeout=5):
                    return
            except urllib.error.HTTPError:
                return  # a 404 from nginx: it is up
            except OSError:
                time.sleep(0.05)  # still binding; polling a start-up, not evidence of speed
        raise OriginUnavailable(f"nginx did not answer on {self.url}")

    def requests(self) -> list[dict]:
        """The requests served so far (``access_log`` on), each with its start and end
        (``time.time()`` seconds), connection, status, bytes sent, path and Range header."""
        path = Path(self._work.name) / "access.log"
        rows = []
        for line in path.read_text().splitlines() if path.exists() else []:
            end, dur, conn, status, sent, uri, rng = (line.split(" ", 6) + ["-"])[:7]
            rows.append(
                {"start": float(end) - float(dur), "end": float(end), "conn": int(conn)}
                | {"status": int(status), "bytes": int(sent), "path": uri, "range": rng}
            )
        return rows

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        self._log.close()
        self._work.cleanup()


if __name__ == "__main__":
    import sys

    with NginxOrigin(sys.argv[1]) as origin:
        print(f"serving {origin.root} at {origin.url} (Ctrl-C stops)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            origin.proc.wait()  # type: ignore[union-attr]
