"""The benchmarks' nginx origin (``benchmarks/nginx_origin.py``): loopback only, ranges,
ETag and Last-Modified, and a request timeline; skipped where nginx and its Lua module are
not installed (the benchmark installs them; tests do not)."""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import nginx_origin  # noqa: E402

pytestmark = pytest.mark.skipif(
    not nginx_origin._installed(), reason="nginx and libnginx-mod-http-lua are not installed"
)


def _get(url: str, rng: str | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, headers={"Range": rng} if rng else {})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, dict(r.headers), r.read()


def test_serves_ranges_with_validators_on_loopback_and_logs_each_request(tmp_path):
    data = bytes(range(256)) * 64
    (tmp_path / "a.tar").write_bytes(data)
    config = nginx_origin.OriginConfig(latency_s=0.001, access_log=True)
    with nginx_origin.NginxOrigin(tmp_path, config) as origin:
        assert origin.url.startswith("http://127.0.0.1:")
        status, headers, body = _get(origin.url + "a.tar", "bytes=100-199")
        assert status == 206 and body == data[100:200]
        assert headers["ETag"] and headers["Last-Modified"]
        assert _get(origin.url + "a.tar")[2] == data
        got = [(r["path"], r["range"], r["status"]) for r in origin.requests()]
        assert ("/a.tar", "bytes=100-199", 206) in got and ("/a.tar", "-", 200) in got
        assert all(r["start"] <= r["end"] for r in origin.requests())
        proc = origin.proc
    assert proc.poll() is not None  # stopped on exit


def test_config_names_only_absolute_module_paths_and_the_caps():
    text = nginx_origin.render_config(
        Path("/srv/d"), Path("/tmp/w"), 8080, nginx_origin.OriginConfig()
    )
    assert "load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;" in text
    assert "listen 127.0.0.1:8080 sndbuf=262144;" in text and "daemon off;" in text
    assert "ngx.sleep(0.03)" in text and "limit_rate 100000000;" in text
    assert "sendfile on;" in text and "etag on;" in text
