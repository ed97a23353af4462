"""Gateways sharing state: two processes on one Redis (replays and rate limits span both
replicas), and two usage stores on one SQLite file (totals add up)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis import Redis

from cloud_gateway.fixed_upstream import ANSWER
from cloud_gateway.logs import LOGGER_NAME
from cloud_gateway.usage_sqlite import SqliteUsageStore
from runtime.offload import OffloadClient, OffloadConfig
from tests.conftest_gateway import GatewayHome, spawn_gateway, wait_for_fresh_minute
from tests.test_gateway import CHAT, post, sealed


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


def test_envelope_replayed_to_another_replica_is_rejected(
    replicas: tuple[str, str], gateway_home: GatewayHome
) -> None:
    a, b = replicas
    envelope, _ = sealed(a, credential=gateway_home.credential)
    assert post(a, envelope).status_code == 200
    replay = post(b, envelope)
    assert replay.status_code == 409
    assert replay.json()["error"]["code"] == "replayed_nonce"


def test_rate_limit_is_shared_by_the_replicas(
    replicas: tuple[str, str], gateway_home: GatewayHome
) -> None:
    a, b = replicas
    cred = gateway_home.credential
    statuses = [post(url, sealed(url, credential=cred)[0]).status_code for url in (a, b, a, b)]
    assert statuses == [200, 200, 200, 429]  # 3 per minute in total, not per replica


def test_a_device_going_from_replica_to_replica_accepts_each_ones_keys_list(
    replicas: tuple[str, str], gateway_home: GatewayHome, tmp_path: Path
) -> None:
    a, b = replicas
    # Consecutive `tandem ask` runs (each a new process on the device's state file) land on
    # the replicas in turn. B is asked for its list first, A a second later: each used to
    # sign its own list when first asked (and keep it a minute), so B's list was older than
    # the one the device had just accepted from A, and refused as `stale_keys`.
    state = tmp_path / "gateway_keys.json"
    httpx.get(b + "/v1/keys").raise_for_status()
    time.sleep(1.1)
    for url in (a, b, a):  # the fixture allows 3 requests a minute
        with OffloadClient(OffloadConfig(url=url, credential=gateway_home.credential),
                           keys_state_path=state) as client:
            assert client.complete(CHAT).text == ANSWER
    # Replicas sharing a keys folder publish the same document, byte for byte (issued_at is
    # the minute's start, and Ed25519 signatures are deterministic).
    for _ in range(2):  # a second try if a minute ended between the two requests
        docs = [httpx.get(url + "/v1/keys").json() for url in (a, b)]
        if docs[0]["issued_at"] == docs[1]["issued_at"]:
            break
    assert docs[0] == docs[1]
    assert docs[0]["issued_at"] % 60 == 0


def test_two_gateways_sharing_usage_sqlite_add_up_instead_of_overwriting(tmp_path: Path) -> None:
    path = tmp_path / "usage.sqlite3"
    first, second = SqliteUsageStore(path), SqliteUsageStore(path)

    async def use() -> tuple[int, int]:
        await first.count_request("phone", 0, 7)
        await first.add_tokens("phone", 7, 21)
        first.flush()
        await second.count_request("phone", 0, 7)
        await second.add_tokens("phone", 7, 30)
        second.flush()
        await first.add_tokens("phone", 7, 1)  # first's next flush also reads second's usage
        first.flush()
        seen_by_first = first.totals("phone", 7)
        await first.close()
        await second.close()
        return seen_by_first

    assert asyncio.run(use()) == (2, 52)
    third = SqliteUsageStore(path)
    assert third.totals("phone", 7) == (2, 52)
    asyncio.run(third.close())


def test_a_usage_file_locked_by_another_gateway_loses_no_count_and_fails_no_request(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "usage.sqlite3"
    store = SqliteUsageStore(path, flush_s=0.0, busy_timeout_s=0.05)  # flush on every call
    other = sqlite3.connect(path, isolation_level=None)

    async def use() -> None:
        other.execute("BEGIN EXCLUSIVE")  # another gateway holding the write lock
        # Both used to raise sqlite3.OperationalError (a 500), and the first flush's
        # increments, taken out of pending before BEGIN failed, were lost for good.
        assert await store.count_request("phone", 0, 7) == (1, 0)
        await store.add_tokens("phone", 7, 5)
        await store.flush_async()  # joins the write the first call started: it fails
        other.execute("ROLLBACK")
        await store.add_tokens("phone", 7, 2)  # flushes all three increments
        await store.close()

    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        asyncio.run(use())
    failed = "usage flush failed, kept for the next one"
    assert [r.getMessage() for r in caplog.records] == [failed]
    assert other.execute("SELECT requests, tokens FROM usage").fetchall() == [(1, 7)]
    other.close()


def test_a_usage_flush_waiting_for_a_locked_file_does_not_stall_the_gateway(
    tmp_path: Path,
) -> None:
    path = tmp_path / "usage.sqlite3"
    store = SqliteUsageStore(path, flush_s=0.0, busy_timeout_s=60.0)  # flush on every call
    other = sqlite3.connect(path, isolation_level=None)

    async def use() -> None:
        other.execute("BEGIN EXCLUSIVE")  # held by another gateway for a long while
        # The flush ran on the event loop: these calls, and every other request of the
        # gateway, waited up to the busy timeout for the lock. Now the write waits in a
        # worker thread while requests go on being counted in memory.
        assert await store.count_request("phone", 0, 7) == (1, 0)
        await store.add_tokens("phone", 7, 5)
        assert await store.count_request("phone", 0, 7) == (2, 5)
        assert store.totals("phone", 7) == (2, 5)
        writing = store._writing
        assert writing is not None and not writing.done()  # still waiting for the lock
        other.execute("COMMIT")
        await store.flush_async()  # joins that write (the first request only) ...
        assert writing.done() and writing.exception() is None
        assert store.totals("phone", 7) == (2, 5)  # ... and keeps the later counts
        await store.close()  # writes the rest

    asyncio.run(use())
    assert other.execute("SELECT requests, tokens FROM usage").fetchall() == [(2, 5)]
    other.close()
