"""The gateway when its Redis goes away: 503 store_unavailable, not ready, and a clear exit."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloud_gateway.fixed_upstream import ANSWER
from cloud_gateway.protocol import (
    open_response,
)
from tests.conftest_gateway import (
    REPO,
    GatewayFactory,
    GatewayHome,
    free_port,
    start_redis,
)
from tests.test_gateway import post, sealed


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A Redis of this test's own, which the test may stop."""
    proc, url = start_redis(tmp_path)
    yield proc, url
    proc.kill()
    proc.wait(timeout=10)


def test_with_redis_down_requests_get_503_and_the_gateway_is_not_ready(
    start_gateway: GatewayFactory, own_redis: tuple[subprocess.Popen[bytes], str]
) -> None:
    proc, url = own_redis
    gw = start_gateway(redis_url=url)
    assert post(gw, sealed(gw)[0]).status_code == 200
    assert httpx.get(gw.url + "/readyz").json() == {"status": "ready"}
    proc.kill()
    proc.wait(timeout=10)
    resp = post(gw, sealed(gw)[0])
    assert resp.status_code == 503
    assert resp.json()["error"]["code"] == "store_unavailable"
    ready = httpx.get(gw.url + "/readyz")
    assert ready.status_code == 503
    assert ready.json()["reason"].startswith("redis unreachable")


class _UpstreamThatOutlivesRedis:
    """Answers like the fixed upstream, but Redis dies while it works (after admission)."""

    def __init__(self, redis: subprocess.Popen[bytes]) -> None:
        self._redis = redis

    async def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        self._redis.kill()
        self._redis.wait(timeout=10)
        message = {"role": "assistant", "content": ANSWER}
        usage = {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12}
        return {"object": "chat.completion", "choices": [{"message": message}], "usage": usage}

    async def stream(self, request: dict[str, Any]) -> Any:
        raise NotImplementedError
        yield b""

    async def ready(self) -> tuple[bool, str]:
        return True, ""

    async def close(self) -> None:
        pass


def test_an_answer_is_delivered_even_if_its_usage_cannot_be_recorded(
    start_gateway: GatewayFactory, own_redis: tuple[subprocess.Popen[bytes], str]
) -> None:
    proc, url = own_redis
    gw = start_gateway(redis_url=url, upstream=_UpstreamThatOutlivesRedis(proc))
    envelope, key = sealed(gw)
    resp = post(gw, envelope)
    assert resp.status_code == 200
    answer = json.loads(open_response(key, resp.content))
    assert answer["choices"][0]["message"]["content"] == ANSWER


def _serve(home: GatewayHome, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {
        **os.environ,
        "TANDEM_GATEWAY_STATE_DIR": str(home.state_dir),
        "TANDEM_GATEWAY_UPSTREAM_URL": f"http://127.0.0.1:{free_port()}/v1",
        "TANDEM_GATEWAY_LOG_LEVEL": "warning",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "cloud_gateway", "serve"],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serve_with_redis_unreachable_says_so_in_one_line(gateway_home: GatewayHome) -> None:
    redis_port = free_port()
    done = _serve(
        gateway_home,
        TANDEM_GATEWAY_PORT=str(free_port()),
        TANDEM_GATEWAY_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("tandem gateway: cannot reach Redis (redis_url): ")
    assert f"127.0.0.1:{redis_port}" in done.stderr


def test_serve_on_a_port_in_use_says_so_in_one_line(gateway_home: GatewayHome) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _serve(gateway_home, TANDEM_GATEWAY_PORT=str(port))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"tandem gateway: cannot listen on 127.0.0.1:{port}: ")
    assert done.stderr.endswith("address already in use\n")
