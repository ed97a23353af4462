"""Two gateway processes sharing one Redis: replays and rate limits span both replicas."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from redis import Redis

from cloud_gateway.protocol import (
    REQUEST_CONTENT_TYPE,
    DeviceCredential,
    seal_request,
    verify_keys_document,
)
from tests.conftest_gateway import GatewayHome, spawn_gateway, wait_for_fresh_minute

CHAT = {"model": "fixed", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}


@pytest.fixture
def replicas(
    gateway_home: GatewayHome, fixed_upstream: str, redis_url: str
) -> Iterator[tuple[str, str]]:
    # The Redis server lives for the session: start each test from an empty database.
    with Redis.from_url(redis_url) as redis:
        redis.flushdb()
    wait_for_fresh_minute()
    env = {"TANDEM_GATEWAY_REQUESTS_PER_MINUTE": "3"}
    procs = []
    try:
        for _ in range(2):
            procs.append(
                spawn_gateway(gateway_home.state_dir, fixed_upstream, redis_url=redis_url, **env)
            )
        yield procs[0][1], procs[1][1]
    finally:
        for proc, _ in procs:
            proc.terminate()
            proc.wait(timeout=15)
            if proc.stderr:
                proc.stderr.close()


def _seal(url: str, credential: str) -> bytes:
    cred = DeviceCredential.parse(credential)
    (key,) = verify_keys_document(httpx.get(url + "/v1/keys").json(), cred.identity_key())
    return seal_request(
        json.dumps(CHAT).encode(),
        kem=key.kem,
        key_id=key.key_id,
        gateway_key=key.public_key,
        device_id=cred.device_id,
        device_key=cred.signing_key(),
    ).envelope


def _post(url: str, envelope: bytes) -> httpx.Response:
    return httpx.post(
        url + "/v1/sealed/chat/completions",
        content=envelope,
        headers={"Content-Type": REQUEST_CONTENT_TYPE},
    )


def test_envelope_replayed_to_another_replica_is_rejected(
    replicas: tuple[str, str], gateway_home: GatewayHome
) -> None:
    a, b = replicas
    envelope = _seal(a, gateway_home.credential)
    assert _post(a, envelope).status_code == 200
    replay = _post(b, envelope)
    assert replay.status_code == 409
    assert replay.json()["error"]["code"] == "replayed_nonce"


def test_rate_limit_is_shared_by_the_replicas(
    replicas: tuple[str, str], gateway_home: GatewayHome
) -> None:
    a, b = replicas
    cred = gateway_home.credential
    statuses = [_post(url, _seal(url, cred)).status_code for url in (a, b, a, b)]
    assert statuses == [200, 200, 200, 429]  # 3 per minute in total, not per replica
