"""Reachability and round-trip time of the cloud gateway, checked in the background.

A daemon thread sends `GET {url}/healthz` every `interval_s`; readers only ever see the last
result, so `Monitor.snapshot()` never waits on the network. Any HTTP answer below 500 counts
as reachable (a gateway without `/healthz` still answers 404); a 5xx, a refused connection or a
timeout counts as unreachable. The runtime can also report what its own offloads observed.
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from runtime.errors import ConfigError
from runtime.monitor.snapshot import NetworkState

log = logging.getLogger(__name__)

_BODY_LIMIT = 64 * 1024  # a health answer is small; never read an unbounded body


class GatewayProbe:
    """`NetworkProbe` for one gateway URL."""

    def __init__(
        self,
        url: str,
        interval_s: float = 10.0,
        timeout_s: float = 1.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"gateway url must be http(s)://host[:port][/path], not {url!r}")
        try:
            self._port = parts.port
        except ValueError as exc:
            raise ConfigError(f"gateway url {url!r} has an invalid port") from exc
        if interval_s <= 0 or timeout_s <= 0:
            raise ConfigError("monitor.network_interval_s and network_timeout_s must be positive")
        self._url = url
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._path = parts.path.rstrip("/") + "/healthz"
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._wall_clock = wall_clock
        self._state = NetworkState(url, None, None, None)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The gateway URL as configured."""
        return self._url

    def start(self) -> None:
        """Start checking in a daemon thread (first check right away); idempotent."""
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(target=self._run, name="gateway-probe", daemon=True)
            self._thread.start()

    def read_network(self) -> NetworkState:
        """The last known state; `reachable` is None until the first check or report."""
        return self._state

    def check_now(self) -> NetworkState:
        """Check the gateway synchronously (at most about 2x the timeout) and record it."""
        reachable, rtt_ms = self._request_health()
        return self._record(reachable, rtt_ms)

    def report(self, ok: bool, rtt_ms: float | None) -> NetworkState:
        """Record an outcome the runtime observed itself, e.g. an offload that failed."""
        return self._record(ok, rtt_ms if ok else None)

    def close(self) -> None:
        """Stop the background thread (waits for an in-flight check); idempotent."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=3 * self._timeout_s + 1.0)

    def _record(self, reachable: bool, rtt_ms: float | None) -> NetworkState:
        state = NetworkState(
            self._url,
            reachable,
            round(rtt_ms, 3) if rtt_ms is not None else None,
            self._wall_clock(),
        )
        self._state = state  # one reference swap: readers never see a half-written state
        return state

    def _request_health(self) -> tuple[bool, float | None]:
        conn_cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = conn_cls(self._host, self._port, timeout=self._timeout_s)
        started = time.perf_counter()
        try:
            conn.request("GET", self._path, headers={"User-Agent": "tandem-monitor"})
            response = conn.getresponse()
            response.read(_BODY_LIMIT)
            elapsed_ms = (time.perf_counter() - started) * 1000.0
        except (OSError, http.client.HTTPException, ValueError):
            return False, None
        finally:
            conn.close()
        if response.status >= 500:
            return False, None
        return True, elapsed_ms

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check_now()
            except Exception:  # a bug here must not kill the thread nor reach the caller
                log.exception("gateway check failed unexpectedly")
            self._stop.wait(self._interval_s)
