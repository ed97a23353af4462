"""The gateway when its Redis goes away: 503 store_unavailable, not ready, a clear exit, and
usage charged once Redis is back (never twice)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from cloud_gateway.app import STATE_KEY
from cloud_gateway.charge_journal import STALE_LOCK_S, ChargeJournal
from cloud_gateway.config import GatewayConfig
from cloud_gateway.errors import ConfigurationError, StoreUnavailable
from cloud_gateway.fixed_upstream import ANSWER
from cloud_gateway.limits import DAY, RateLimiter
from cloud_gateway.protocol import REQUEST_CONTENT_TYPE, open_response
from cloud_gateway.usage_redis import FIRST_ATTEMPT_TTL, RedisUsageStore
from tests.conftest_gateway import (
    REPO,
    GatewayFactory,
    GatewayHome,
    RunningGateway,
    free_port,
    start_redis,
)
from tests.test_gateway import gateway_log, post, sealed


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait(timeout=10)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A Redis of this test's own, which the test may stop."""
    proc, url = start_redis(tmp_path)
    yield proc, url
    _kill(proc)


def test_with_redis_down_requests_get_503_and_the_gateway_is_not_ready(
    start_gateway: GatewayFactory, own_redis: tuple[subprocess.Popen[bytes], str]
) -> None:
    proc, url = own_redis
    gw = start_gateway(redis_url=url)
    assert post(gw, sealed(gw)[0]).status_code == 200
    assert httpx.get(gw.url + "/readyz").json() == {"status": "ready"}
    _kill(proc)
    resp = post(gw, sealed(gw)[0])
    assert resp.status_code == 503
    assert resp.json()["error"]["code"] == "store_unavailable"
    ready = httpx.get(gw.url + "/readyz")
    assert ready.status_code == 503
    assert ready.json()["reason"].startswith("redis unreachable")


@pytest.mark.parametrize("refusal", ["read-only replica", "full"])
def test_a_redis_that_answers_but_refuses_writes_is_not_ready_and_the_log_says_why(
    start_gateway: GatewayFactory, own_redis: tuple[subprocess.Popen[bytes], str], refusal: str
) -> None:
    _, url = own_redis
    gw = start_gateway(redis_url=url)
    assert post(gw, sealed(gw)[0]).status_code == 200
    with Redis.from_url(url) as admin:
        if refusal == "read-only replica":  # e.g. redis_url still on the old primary after
            # a failover: it follows a primary (here one that is down) and answers READONLY
            admin.replicaof("127.0.0.1", str(free_port()))
            error = "ReadOnlyError: You can't write against a read only replica."
        else:  # maxmemory reached under the noeviction policy: every write answers OOM
            admin.config_set("maxmemory-policy", "noeviction")
            admin.config_set("maxmemory", "1")
            error = "OutOfMemoryError: command not allowed when used memory > 'maxmemory'."
        assert admin.ping()  # what readiness used to ask, and Redis still answers
        try:
            with gateway_log(logging.INFO) as records:
                resp = post(gw, sealed(gw)[0])
            ready = httpx.get(gw.url + "/readyz")
        finally:
            admin.replicaof("NO", "ONE")
            admin.config_set("maxmemory", "0")
    assert (ready.status_code, ready.json()) == (
        503, {"status": "not ready", "reason": f"redis refuses writes: {error}"}
    )
    assert resp.status_code == 503
    assert resp.json()["error"] == {
        "message": "the replay store refused the request; retry later",  # not "unreachable"
        "type": "server_error",
        "code": "store_unavailable",
    }
    (rejected,) = [r for r in records if r.getMessage() == "rejected"]
    assert rejected.fields["cause"] == error  # type: ignore[attr-defined]
    # And back once Redis takes writes again.
    assert httpx.get(gw.url + "/readyz").json() == {"status": "ready"}
    assert post(gw, sealed(gw)[0]).status_code == 200


def test_serve_with_a_redis_that_refuses_writes_says_so_in_one_line(
    gateway_home: GatewayHome, own_redis: tuple[subprocess.Popen[bytes], str]
) -> None:
    _, url = own_redis
    with Redis.from_url(url) as admin:
        admin.replicaof("127.0.0.1", str(free_port()))
        try:
            done = _serve(gateway_home, TANDEM_GATEWAY_PORT=str(free_port()),
                          TANDEM_GATEWAY_REDIS_URL=url)
        finally:
            admin.replicaof("NO", "ONE")
    assert done.returncode == 2
    assert done.stderr == (
        "tandem gateway: Redis refuses writes (redis_url): "
        "You can't write against a read only replica.\n"
    )


def test_a_redis_that_stops_answering_is_a_503_not_a_hung_request(
    start_gateway: GatewayFactory, own_redis: tuple[subprocess.Popen[bytes], str]
) -> None:
    proc, url = own_redis
    gw = start_gateway(redis_url=url, redis_timeout_s=0.5)
    assert post(gw, sealed(gw)[0]).status_code == 200
    proc.send_signal(signal.SIGSTOP)  # connections still accepted, nothing answered
    try:
        # Without a socket timeout this waited on Redis for good (here: until httpx gave up).
        resp = httpx.post(gw.url + "/v1/sealed/chat/completions", content=sealed(gw)[0],
                          headers={"Content-Type": REQUEST_CONTENT_TYPE}, timeout=60)
        assert resp.status_code == 503
        assert resp.json()["error"]["code"] == "store_unavailable"
        ready = httpx.get(gw.url + "/readyz", timeout=60)
        assert ready.status_code == 503
        assert ready.json()["reason"] == "redis unreachable: TimeoutError"
    finally:
        proc.send_signal(signal.SIGCONT)
    assert post(gw, sealed(gw)[0]).status_code == 200  # and back when Redis answers again


def test_the_redis_client_times_out_as_configured_and_the_url_can_say_otherwise(
    start_gateway: GatewayFactory, redis_url: str
) -> None:
    # redis-py's own default (5 s in the installed 8.1; no limit in older releases) must not
    # decide how long a request waits on a silent Redis.
    for url, expected in ((redis_url, 0.75), (redis_url + "?socket_timeout=3", 3.0)):
        gw = start_gateway(redis_url=url, redis_timeout_s=0.75)
        client = gw.server._app[STATE_KEY].redis
        assert client is not None
        kwargs = client.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == expected
        assert kwargs["socket_connect_timeout"] == 0.75


def test_the_redis_timeout_must_be_positive() -> None:
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ConfigurationError, match="redis_timeout_s"):
            GatewayConfig(redis_timeout_s=bad)


class _UpstreamThatStopsRedis:
    """Answers 12 tokens like the fixed upstream. With `stop_redis` set, its next answer
    first calls `stop` on Redis (after admission, before the charge) and clears the flag."""

    def __init__(self, stop: Callable[[], object]) -> None:
        self._stop = stop
        self.stop_redis = False

    async def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        if self.stop_redis:
            self.stop_redis = False
            self._stop()
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
    upstream = _UpstreamThatStopsRedis(lambda: _kill(proc))
    upstream.stop_redis = True
    gw = start_gateway(redis_url=url, upstream=upstream)
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


class _Flapping:
    """A Redis of the test's own on a fixed port, which the test stops and starts again
    (empty: it saves nothing, like a Redis that lost its data)."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self.proc, self.url = start_redis(folder)
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])

    def stop(self) -> None:
        _kill(self.proc)

    def start(self) -> None:
        self.proc, _ = start_redis(self._folder, port=self.port)

    def tokens(self, device: str, *days: int) -> int:
        with Redis.from_url(self.url) as redis:
            return sum(int(redis.get(f"tandem:tok:{device}:{d}") or 0) for d in set(days))


@pytest.fixture
def flapping(tmp_path: Path) -> Iterator[_Flapping]:
    redis = _Flapping(tmp_path)
    yield redis
    redis.stop()


def _uncharged(gw: RunningGateway) -> float:
    for line in httpx.get(gw.url + "/metrics").text.splitlines():
        if line.startswith("tandem_gateway_uncharged_tokens "):
            return float(line.split()[1])
    raise AssertionError("no tandem_gateway_uncharged_tokens metric")


def _today() -> int:
    return int(time.time() // DAY)


def test_usage_that_redis_missed_is_charged_once_at_the_next_request(
    start_gateway: GatewayFactory, flapping: _Flapping
) -> None:
    upstream = _UpstreamThatStopsRedis(flapping.stop)
    # No periodic retry here (an hour): the next request is what applies the kept charge.
    gw = start_gateway(redis_url=flapping.url, upstream=upstream, usage_flush_s=3600.0)
    first_day = _today()
    upstream.stop_redis = True
    envelope, key = sealed(gw)
    resp = post(gw, envelope)
    assert resp.status_code == 200  # delivered, though its 12 tokens could not be charged
    assert json.loads(open_response(key, resp.content))["choices"][0]["message"]["content"]
    assert _uncharged(gw) == 12.0
    flapping.start()  # back, empty
    assert post(gw, sealed(gw)[0]).status_code == 200
    assert flapping.tokens("phone", first_day, _today()) == 24  # the kept 12 once, then 12
    assert _uncharged(gw) == 0.0


def test_usage_that_redis_missed_is_charged_by_the_periodic_retry(
    start_gateway: GatewayFactory, flapping: _Flapping
) -> None:
    upstream = _UpstreamThatStopsRedis(flapping.stop)
    gw = start_gateway(redis_url=flapping.url, upstream=upstream, usage_flush_s=0.1)
    first_day = _today()
    upstream.stop_redis = True
    assert post(gw, sealed(gw)[0]).status_code == 200
    flapping.start()
    charged = 0
    for _ in range(600):  # no request: the retry every usage_flush_s applies it
        charged = flapping.tokens("phone", first_day, _today())
        if charged:
            break
        time.sleep(0.05)
    assert charged == 12
    assert post(gw, sealed(gw)[0]).status_code == 200
    assert flapping.tokens("phone", first_day, _today()) == 24
    assert _uncharged(gw) == 0.0


def test_charges_kept_while_redis_is_down_go_to_their_own_day_summed(
    flapping: _Flapping,
) -> None:
    yesterday, today = 20_000, 20_001  # day numbers: `now` is given, not read

    async def run() -> tuple[bool, ...]:
        redis = AsyncRedis.from_url(flapping.url)
        limiter = RateLimiter(RedisUsageStore(redis), 0, 0)
        try:
            flapping.stop()
            kept = (
                await limiter.record("phone", 5, yesterday * DAY + 100),
                await limiter.record("phone", 7, yesterday * DAY + 86_000),
                await limiter.record("tablet", 4, today * DAY + 10),
            )
            assert limiter.uncharged_tokens == 16
            flapping.start()
            charged = await limiter.record("phone", 3, today * DAY + 20)
            assert limiter.uncharged_tokens == 0
            return (*kept, charged)
        finally:
            await redis.aclose()

    assert asyncio.run(run()) == (False, False, False, True)
    assert flapping.tokens("phone", yesterday) == 12
    assert flapping.tokens("phone", today) == 3
    assert flapping.tokens("tablet", today) == 4


def test_a_charge_sent_again_under_its_id_is_added_once(redis_url: str) -> None:
    async def run() -> None:
        redis = AsyncRedis.from_url(redis_url)
        store = RedisUsageStore(redis, prefix="tandem-once:")
        try:
            for _ in range(3):  # as if each reply had been lost with the connection
                await store.add_tokens("phone", 7, 21, charge_id="c-1")
            await store.add_tokens("phone", 7, 2, charge_id="c-2")
        finally:
            await redis.aclose()

    asyncio.run(run())
    with Redis.from_url(redis_url) as redis:
        assert int(redis.get("tandem-once:tok:phone:7") or 0) == 23
        assert 0 < redis.ttl("tandem-once:tok:phone:7") <= 2 * DAY


class _RepliesLost(RedisUsageStore):
    """Redis takes the charge, and the reply is lost: the connection dropped after the
    command went out (simulated here, after the real command ran)."""

    def __init__(self, redis: AsyncRedis, prefix: str, times: int) -> None:
        super().__init__(redis, prefix=prefix)
        self.lost = times

    async def add_tokens(self, *args: Any, **kwargs: Any) -> None:
        await super().add_tokens(*args, **kwargs)
        if self.lost:
            self.lost -= 1
            raise StoreUnavailable("the rate-limit store is unreachable")


def test_a_charge_whose_first_reply_is_lost_is_added_once(redis_url: str) -> None:
    async def run() -> tuple[bool, int]:
        redis = AsyncRedis.from_url(redis_url)
        limiter = RateLimiter(_RepliesLost(redis, "tandem-lost:", times=2), 0, 0)
        try:
            charged = await limiter.record("phone", 9, 3 * DAY + 10)  # first reply lost
            assert limiter.uncharged_tokens == 9
            assert not await limiter.apply_uncharged()  # the re-sent one's reply lost too
            assert await limiter.apply_uncharged()
            return charged, limiter.uncharged_tokens
        finally:
            await redis.aclose()

    assert asyncio.run(run()) == (False, 0)
    with Redis.from_url(redis_url) as redis:
        assert int(redis.get("tandem-lost:tok:phone:3") or 0) == 9  # sent 3 times, added once
        markers = list(redis.scan_iter("tandem-lost:charge:*"))
        assert len(markers) == 1
        # Set by the first attempt, for an hour: re-sending it does not extend it.
        assert 3_500 < redis.ttl(markers[0]) <= FIRST_ATTEMPT_TTL


def test_every_charge_counts_once_with_a_marker_of_an_hour(redis_url: str) -> None:
    async def run() -> None:
        redis = AsyncRedis.from_url(redis_url)
        limiter = RateLimiter(RedisUsageStore(redis, prefix="tandem-mark:"), 0, 0)
        try:
            assert await limiter.record("phone", 4, 5 * DAY)
            assert await limiter.record("phone", 6, 5 * DAY)
        finally:
            await redis.aclose()

    asyncio.run(run())
    with Redis.from_url(redis_url) as redis:
        assert int(redis.get("tandem-mark:tok:phone:5") or 0) == 10
        assert 0 < redis.ttl("tandem-mark:tok:phone:5") <= 2 * DAY
        ttls = [redis.ttl(k) for k in redis.scan_iter("tandem-mark:charge:*")]
        assert len(ttls) == 2
        assert all(3_500 < t <= FIRST_ATTEMPT_TTL for t in ttls)


def test_kept_charges_are_bounded_and_what_is_dropped_is_logged(flapping: _Flapping) -> None:
    async def run() -> int:
        redis = AsyncRedis.from_url(flapping.url)
        limiter = RateLimiter(RedisUsageStore(redis), 0, 0, max_uncharged=2)
        try:
            flapping.stop()
            await limiter.record("phone", 5, 100.0)
            await limiter.record("tablet", 7, 100.0)
            await limiter.record("tablet", 1, 200.0)  # the same device and day: summed
            await limiter.record("watch", 3, 100.0)  # a third (device, day): no room
            return limiter.uncharged_tokens
        finally:
            await redis.aclose()

    with gateway_log(level=None) as records:
        assert asyncio.run(run()) == 13
    dropped = [r for r in records if r.getMessage() == "usage dropped"]
    assert [(r.fields["device"], r.fields["tokens"]) for r in dropped] == [("watch", 3)]  # type: ignore[attr-defined]


def test_usage_uncharged_at_shutdown_is_logged_and_charged_by_the_next_gateway(
    start_gateway: GatewayFactory, flapping: _Flapping
) -> None:
    upstream = _UpstreamThatStopsRedis(flapping.stop)
    gw = start_gateway(redis_url=flapping.url, upstream=upstream, usage_flush_s=3600.0)
    first_day = _today()
    upstream.stop_redis = True
    assert post(gw, sealed(gw)[0]).status_code == 200
    with gateway_log(level=None) as records:
        gw.server.stop()  # Redis is still down: the last try fails too
    left = {r.getMessage(): r.fields for r in records}  # type: ignore[attr-defined]
    assert left["usage not charged"]["device"] == "phone"
    assert left["usage not charged"]["tokens"] == 12
    assert left["usage not charged"]["day"] == time.strftime("%Y-%m-%d", time.gmtime())
    kept = Path(left["usage not charged at shutdown"].pop("kept_in"))
    assert left["usage not charged at shutdown"] == {"charges": 1, "tokens": 12}
    assert kept.parent == gw.home.state_dir / "uncharged" and kept.exists()
    # The next gateway on this state folder takes the charge over and applies it, once.
    flapping.start()
    with gateway_log(level=None) as records:
        gw2 = start_gateway(redis_url=flapping.url, usage_flush_s=0.1)
    claimed = [r.fields for r in records if r.getMessage() == "kept usage claimed"]  # type: ignore[attr-defined]
    assert [(c["path"], c["tokens"]) for c in claimed] == [(str(kept), 12)]
    assert not kept.exists()  # now in the new gateway's own file, until charged
    for _ in range(600):
        if _uncharged(gw2) == 0.0:
            break
        time.sleep(0.05)
    assert flapping.tokens("phone", first_day, _today()) == 12
    assert list((gw.home.state_dir / "uncharged").glob("*.json")) == []
    gw2.server.stop()
    assert flapping.tokens("phone", first_day, _today()) == 12


def test_charges_kept_by_a_gateway_that_died_are_charged_once_by_the_next(
    flapping: _Flapping, tmp_path: Path
) -> None:
    folder = tmp_path / "uncharged"
    today = _today()

    async def died() -> None:  # keeps two charges, saves them (an upkeep round), then dies
        redis = AsyncRedis.from_url(flapping.url)
        journal = ChargeJournal(folder)
        limiter = RateLimiter(RedisUsageStore(redis), 0, 0, journal=journal)
        flapping.stop()
        await limiter.record("phone", 5, today * DAY + 10)
        assert not await limiter.apply_uncharged()  # sends it once under an id: fails
        await limiter.record("tablet", 7, today * DAY + 20)
        limiter.persist()
        journal._lock.close()  # what the kernel does for a killed process: no clean-up
        await redis.aclose()

    async def next_two() -> tuple[int, int]:
        redis = AsyncRedis.from_url(flapping.url)
        first = RateLimiter(RedisUsageStore(redis), 0, 0, journal=ChargeJournal(folder))
        second = RateLimiter(RedisUsageStore(redis), 0, 0, journal=ChargeJournal(folder))
        taken = first.uncharged_tokens, second.uncharged_tokens
        await first.close()
        await second.close()
        await redis.aclose()
        return taken

    asyncio.run(died())
    assert len(list(folder.glob("*.json"))) == 1
    flapping.start()
    assert asyncio.run(next_two()) == (12, 0)  # claimed by one of them only
    assert flapping.tokens("phone", today) == 5
    assert flapping.tokens("tablet", today) == 7
    assert list(folder.iterdir()) == []
    assert list(folder.iterdir()) == []


def test_a_claimed_file_left_by_a_crash_while_claiming_is_charged_once(
    flapping: _Flapping, tmp_path: Path
) -> None:
    # A gateway claimed a dead one's file, wrote the charges to its own file and died before
    # deleting the claimed one: both files hold the charges, under the same ids.
    folder = tmp_path / "uncharged"
    folder.mkdir()
    today = _today()
    dead = {"version": 1, "unsent": [["phone", today, 5]], "sent": [["c-9", "tablet", today, 7]]}
    (folder / "a.json").write_text(json.dumps(dead))
    claimer = ChargeJournal(folder)
    charges = claimer.claim()
    (folder / "b.json").write_text(json.dumps(
        {"version": 1, "unsent": [], "sent": [[i, *c] for i, c in charges.items()]}))
    claimer.close()  # and dies: a.json stays

    async def charge() -> None:
        redis = AsyncRedis.from_url(flapping.url)
        limiter = RateLimiter(RedisUsageStore(redis), 0, 0, journal=ChargeJournal(folder))
        assert limiter.uncharged_tokens == 12  # both files' charges, under the same two ids
        await limiter.close()
        await redis.aclose()

    asyncio.run(charge())
    assert flapping.tokens("phone", today) == 5
    assert flapping.tokens("tablet", today) == 7
    assert list(folder.iterdir()) == []


def test_an_unreadable_kept_usage_file_is_logged_and_left_for_an_operator(tmp_path: Path) -> None:
    folder = tmp_path / "uncharged"
    folder.mkdir()
    (folder / "broken.json").write_text('{"version": 1, "unsent": [["phone"]]}')
    journal = ChargeJournal(folder)
    with gateway_log(level=None) as records:
        assert journal.claim() == {}
    [error] = [r for r in records if r.getMessage() == "kept usage file unreadable"]
    assert error.fields["path"] == str(folder / "broken.json")  # type: ignore[attr-defined]
    journal.write({}, {})
    journal.close()
    assert sorted(p.name for p in folder.iterdir()) == ["broken.json", "broken.lock"]


def test_lock_files_left_by_crashed_gateways_are_removed_but_a_live_ones_stays(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "uncharged"
    alive = ChargeJournal(folder)  # another gateway, running for a while
    old = time.time() - 2 * STALE_LOCK_S
    crashed, young = folder / "crashed.lock", folder / "young.lock"
    crashed.touch()
    young.touch()  # just opened by a gateway starting now, maybe not locked yet
    for path in (crashed, Path(alive._lock.name)):
        os.utime(path, (old, old))
    journal = ChargeJournal(folder)
    assert journal.claim() == {}
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{alive.id}.lock", f"{journal.id}.lock", "young.lock"])
    journal.close()
    alive.close()
    assert [p.name for p in folder.iterdir()] == ["young.lock"]


class _StoreRefusingCharges:
    """A usage store that counts requests but whose charges Redis refuses (e.g. OOM)."""

    async def count_request(self, device: str, minute: int, day: int) -> tuple[int, int]:
        return 1, 0

    async def add_tokens(self, device: str, day: int, tokens: int,
                         charge_id: str | None = None, *, first_attempt: bool = False) -> None:
        raise StoreUnavailable("the rate-limit store refused the request; retry later",
                               cause="OutOfMemoryError: command not allowed")

    async def close(self) -> None:
        pass


def test_a_deferred_charge_is_logged_with_what_the_store_answered() -> None:
    limiter = RateLimiter(_StoreRefusingCharges(), 0, 0)
    with gateway_log(logging.INFO) as records:
        assert asyncio.run(limiter.record("phone", 5, time.time())) is False
        assert asyncio.run(limiter.record("phone", 3, time.time())) is False
    deferred = [r for r in records if r.getMessage() == "usage charge deferred"]
    assert [(r.fields["tokens"], r.fields["cause"]) for r in deferred] == [  # type: ignore[attr-defined]
        (5, "OutOfMemoryError: command not allowed"),
        (3, "OutOfMemoryError: command not allowed"),
    ]
    assert limiter.uncharged_tokens == 8
