"""Fixtures for the gateway and offload tests (imported by tests/conftest.py).

Everything here is real: gateways and the fixed upstream are aiohttp servers on loopback
ports (in a background thread, or as separate processes where a test kills one), Redis is a
real `redis-server` started on a free port, and keys and credentials are made by the same
code as `tandem gateway keygen/enroll`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from cloud_gateway.app import RUN_OPTIONS, create_app
from cloud_gateway.config import GatewayConfig
from cloud_gateway.devices import DeviceRegistry
from cloud_gateway.fixed_upstream import create_fixed_upstream_app
from cloud_gateway.keys import generate_key, load_identity
from cloud_gateway.upstream import Upstream
from kernels.base import Engine

REPO = Path(__file__).resolve().parent.parent

__all__ = ["fixed_upstream", "gateway", "gateway_home", "redis_url", "start_gateway"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThreadedServer:
    """An aiohttp app served from a background thread with its own event loop.

    Tests are synchronous (the offload client is), so the server must not share their thread.
    """

    def __init__(self, app: web.Application, *, handler_cancellation: bool = False) -> None:
        self._app = app
        self._handler_cancellation = handler_cancellation
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ThreadedServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=60)
        return self

    async def _start(self) -> None:
        self._runner = web.AppRunner(
            self._app,
            access_log=None,
            shutdown_timeout=0.5,
            handler_cancellation=self._handler_cancellation,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = int(server.sockets[0].getsockname()[1])

    def stop(self) -> None:
        """Shut the app down cleanly (its cleanup contexts run); idempotent."""
        if self._loop.is_closed():
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        # Requests still hanging (the fixed upstream's "hang" model) end with the loop.
        asyncio.run_coroutine_threadsafe(_cancel_all(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


async def _cancel_all() -> None:
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@dataclass(frozen=True, slots=True)
class GatewayHome:
    """A gateway state directory with an identity, one x25519 key and one enrolled device."""

    state_dir: Path
    credential: str
    key_id: str
    device: str = "phone"

    def enroll(self, name: str) -> str:
        """Enroll another device; its credential string."""
        registry = DeviceRegistry(self.state_dir / "devices.sqlite3")
        try:
            identity = load_identity(self.state_dir).public_key().public_bytes_raw()
            return registry.enroll(name, identity).encode()
        finally:
            registry.close()

    def revoke(self, name: str) -> None:
        registry = DeviceRegistry(self.state_dir / "devices.sqlite3")
        try:
            registry.revoke(name)
        finally:
            registry.close()


@dataclass(frozen=True, slots=True)
class RunningGateway:
    url: str
    config: GatewayConfig
    home: GatewayHome
    server: ThreadedServer


def make_home(state_dir: Path) -> GatewayHome:
    """Create keys and enroll device "phone" under `state_dir`."""
    stored = generate_key(state_dir, "x25519")
    registry = DeviceRegistry(state_dir / "devices.sqlite3")
    try:
        identity = load_identity(state_dir).public_key().public_bytes_raw()
        credential = registry.enroll("phone", identity).encode()
    finally:
        registry.close()
    return GatewayHome(state_dir, credential, stored.key_id)


@pytest.fixture
def gateway_home(tmp_path: Path) -> GatewayHome:
    return make_home(tmp_path / "gateway")


@pytest.fixture(scope="session")
def fixed_upstream() -> Iterator[str]:
    """Base URL (…/v1) of a real fixed-response OpenAI-compatible server."""
    server = ThreadedServer(create_fixed_upstream_app()).start()
    yield server.url + "/v1"
    server.stop()


GatewayFactory = Callable[..., RunningGateway]


@pytest.fixture
def start_gateway(gateway_home: GatewayHome, fixed_upstream: str) -> Iterator[GatewayFactory]:
    """Start gateways in-process: `start_gateway(**config_overrides, engine=, upstream=)`."""
    started: list[ThreadedServer] = []

    def start(
        *, engine: Engine | None = None, upstream: Upstream | None = None, **overrides: object
    ) -> RunningGateway:
        base = GatewayConfig(
            state_dir=str(gateway_home.state_dir), upstream_url=fixed_upstream, port=0
        )
        config = replace(base, **overrides)  # type: ignore[arg-type]
        app = create_app(config, engine=engine, upstream=upstream)
        server = ThreadedServer(app, **RUN_OPTIONS).start()  # served as `serve` serves it
        started.append(server)
        return RunningGateway(server.url, config, gateway_home, server)

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def gateway(start_gateway: GatewayFactory) -> RunningGateway:
    """One gateway on a loopback port, forwarding to the fixed upstream."""
    return start_gateway()


def start_redis(folder: Path, port: int = 0) -> tuple[subprocess.Popen[bytes], str]:
    """A real redis-server on `port` (0: a free one), saving nothing; (process, URL). Stop it
    yourself. Started again on the port of one stopped, it is that Redis back, emptied."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (CI installs it with apt)")
    port = port or free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port, proc)
    except BaseException:
        proc.kill()
        proc.wait(timeout=10)
        raise
    return proc, f"redis://127.0.0.1:{port}/0"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free port (skipped only when redis-server is not installed)."""
    proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout_s} s")


def wait_for_fresh_minute(margin_s: float = 15.0) -> None:
    """Sleep into the next minute when this one ends within `margin_s`.

    Per-minute limits use fixed UTC-minute windows; a test that counts requests must not
    straddle a window boundary, or the counts reset in the middle of it.
    """
    into = time.time() % 60
    if into > 60 - margin_s:
        time.sleep(60 - into + 0.05)


def spawn_gateway(
    state_dir: Path, upstream_url: str, *, redis_url: str = "", **env: str
) -> tuple[subprocess.Popen[bytes], str]:
    """`python -m cloud_gateway serve` as its own process; returns (process, base URL)."""
    port = free_port()
    environ = {
        **os.environ,
        "TANDEM_GATEWAY_STATE_DIR": str(state_dir),
        "TANDEM_GATEWAY_PORT": str(port),
        "TANDEM_GATEWAY_UPSTREAM_URL": upstream_url,
        "TANDEM_GATEWAY_REDIS_URL": redis_url,
        "TANDEM_GATEWAY_LOG_LEVEL": "warning",
        **env,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloud_gateway", "serve"],
        cwd=REPO,
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 30
    while time.monotonic() < end:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"gateway exited with {proc.returncode}: {err[-2000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=0.5).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("gateway did not start within 30 s")
