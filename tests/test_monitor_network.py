"""Gateway reachability against a real HTTP server on a 127.0.0.1 port, and a closed port."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from runtime.config import MonitorConfig
from runtime.errors import ConfigError
from runtime.monitor import Monitor, NetworkState
from runtime.monitor.network import GatewayProbe


class _Gateway(ThreadingHTTPServer):
    status = 200
    paths: list[str]
    hit: threading.Event


class _Handler(BaseHTTPRequestHandler):
    server: _Gateway

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.server.paths.append(self.path)
        body = b'{"ok": true}'
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.hit.set()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Keep test output quiet."""


@pytest.fixture
def gateway() -> Iterator[_Gateway]:
    server = _Gateway(("127.0.0.1", 0), _Handler)
    server.paths = []
    server.hit = threading.Event()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _url(server: _Gateway, path: str = "") -> str:
    host, port = server.server_address[:2]
    return f"http://{host!s}:{port}{path}"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens here any more: connections are refused


def test_running_gateway_is_reachable_with_an_rtt(gateway: _Gateway) -> None:
    probe = GatewayProbe(_url(gateway), timeout_s=5.0)
    assert probe.read_network() == NetworkState(_url(gateway), None, None, None)
    state = probe.check_now()
    assert state.reachable is True
    assert state.rtt_ms is not None and state.rtt_ms > 0
    assert state.checked_at is not None
    assert gateway.paths == ["/healthz"]
    assert probe.read_network() is state


def test_health_path_follows_the_gateway_base_path(gateway: _Gateway) -> None:
    GatewayProbe(_url(gateway, "/tandem/"), timeout_s=5.0).check_now()
    assert gateway.paths == ["/tandem/healthz"]


def test_gateway_without_healthz_still_counts_as_reachable(gateway: _Gateway) -> None:
    gateway.status = 404
    assert GatewayProbe(_url(gateway), timeout_s=5.0).check_now().reachable is True


def test_gateway_answering_5xx_is_unreachable(gateway: _Gateway) -> None:
    gateway.status = 503
    state = GatewayProbe(_url(gateway), timeout_s=5.0).check_now()
    assert (state.reachable, state.rtt_ms) == (False, None)


def test_closed_port_is_unreachable() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    state = GatewayProbe(url, timeout_s=2.0).check_now()
    assert state.gateway_url == url
    assert (state.reachable, state.rtt_ms) == (False, None)
    assert state.checked_at is not None


@pytest.mark.parametrize("url", ["ftp://example.org", "127.0.0.1:8443", "http://", "http://h:x"])
def test_malformed_gateway_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="gateway url"):
        GatewayProbe(url)


def test_monitor_checks_the_gateway_in_the_background(gateway: _Gateway) -> None:
    cfg = MonitorConfig(network_interval_s=3600.0, network_timeout_s=5.0, vcgencmd="")
    with Monitor.from_config(cfg, gateway_url=_url(gateway)):
        # The daemon thread's first check happens right away, without anyone asking.
        assert gateway.hit.wait(timeout=30.0)
    assert gateway.paths[0] == "/healthz"


def test_check_gateway_updates_the_cached_snapshot(gateway: _Gateway) -> None:
    cfg = MonitorConfig(cache_interval_s=3600.0, network_interval_s=3600.0, network_timeout_s=5.0)
    with Monitor.from_config(cfg, gateway_url=_url(gateway)) as monitor:
        before = monitor.snapshot()
        state = monitor.check_gateway()
        after = monitor.snapshot()
    assert state.reachable is True
    assert after.network == state
    assert after.taken_at == before.taken_at  # the hardware readings were not redone


def test_reported_offload_failure_marks_gateway_unreachable_at_once(gateway: _Gateway) -> None:
    cfg = MonitorConfig(cache_interval_s=3600.0, network_interval_s=3600.0, network_timeout_s=5.0)
    with Monitor.from_config(cfg, gateway_url=_url(gateway)) as monitor:
        monitor.check_gateway()
        assert monitor.snapshot().network.reachable is True
        monitor.report_gateway(False, None)
        assert monitor.snapshot().network.reachable is False
        assert monitor.snapshot().network.rtt_ms is None
        monitor.report_gateway(True, 41.5)
        network = monitor.snapshot().network
    assert (network.reachable, network.rtt_ms) == (True, 41.5)


def test_no_gateway_configured_reads_as_all_none() -> None:
    with Monitor() as monitor:
        assert monitor.report_gateway(True, 10.0) == NetworkState(None, None, None, None)
        assert monitor.check_gateway() == NetworkState(None, None, None, None)
        assert monitor.snapshot().network == NetworkState(None, None, None, None)
