"""The device's offload client against real gateways: deadline, retries, breaker, tampering."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import httpx
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_gateway.fixed_upstream import ANSWER
from cloud_gateway.keys import generate_key, list_keys, load_identity
from cloud_gateway.protocol import DeviceCredential, PublishedKey, sign_keys_document
from cloud_gateway.protocol.codec import b64e
from kernels.base import Engine, GenerationParams, Message, generate
from runtime import offload_keys
from runtime.errors import OffloadError
from runtime.monitor.snapshot import NetworkState
from runtime.offload import OffloadClient, OffloadConfig
from runtime.offload_errors import (
    CircuitOpen,
    GatewayRejected,
    GatewayUnreachable,
    OffloadNotConfigured,
    OffloadTimeout,
    SealedReplyInvalid,
)
from runtime.offload_keys import KeyCache, default_state_path
from tests.conftest_gateway import (
    GatewayFactory,
    GatewayHome,
    RunningGateway,
    ThreadedServer,
    free_port,
    spawn_gateway,
)

CHAT = {"model": "fixed", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}


def make_client(url: str, credential: str, **kw: object) -> OffloadClient:
    return OffloadClient(OffloadConfig(url=url, credential=credential, **kw))  # type: ignore[arg-type]


def test_unconfigured_client_says_so() -> None:
    client = OffloadClient(OffloadConfig())
    ok, reason = client.available()
    assert not ok and "not configured" in reason
    with pytest.raises(OffloadNotConfigured):
        client.complete(CHAT)
    client.close()


def test_credential_can_be_given_as_a_file(gateway: RunningGateway, tmp_path: Path) -> None:
    path = tmp_path / "device.cred"
    path.write_text(gateway.home.credential + "\n")
    with make_client(gateway.url, str(path)) as client:
        assert client.complete(CHAT).text == ANSWER


def test_hung_upstream_ends_in_a_timeout_at_the_deadline(gateway: RunningGateway) -> None:
    outcomes: list[tuple[bool, float | None]] = []
    config = OffloadConfig(url=gateway.url, credential=gateway.home.credential, deadline_s=1.0)
    with OffloadClient(config, on_outcome=lambda ok, rtt: outcomes.append((ok, rtt))) as client:
        with pytest.raises(OffloadTimeout, match="1.0 s deadline"):
            client.complete({**CHAT, "model": "hang"})
        assert client.breaker.failures == 1
        client.complete(CHAT)
    assert outcomes[0] == (False, None)
    assert outcomes[1][0] is True and outcomes[1][1] is not None and outcomes[1][1] > 0


def test_breaker_opens_after_repeated_failures_and_says_so(gateway_home: GatewayHome) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with make_client(
        dead, gateway_home.credential, breaker_failures=2, breaker_reset_s=600, backoff_s=0.01
    ) as client:
        for _ in range(2):
            with pytest.raises(GatewayUnreachable, match="cannot"):
                client.complete(CHAT)
        with pytest.raises(CircuitOpen, match="2 failed calls in a row"):
            client.complete(CHAT)
        ok, reason = client.available()
        assert not ok and "circuit open" in reason


def test_half_open_breaker_closes_after_one_success(gateway: RunningGateway) -> None:
    with make_client(
        gateway.url, gateway.home.credential, breaker_failures=1, breaker_reset_s=0.0, deadline_s=1
    ) as client:
        with pytest.raises(OffloadTimeout):
            client.complete({**CHAT, "model": "hang"})
        assert client.complete(CHAT).text == ANSWER  # the half-open trial
        assert client.breaker.failures == 0 and client.available() == (True, "")


def test_monitor_reporting_offline_vetoes_the_cloud(gateway: RunningGateway) -> None:
    offline = NetworkState(gateway.url, False, None, 0.0)
    config = OffloadConfig(url=gateway.url, credential=gateway.home.credential)
    with OffloadClient(config, network_state=lambda: offline) as client:
        assert client.available() == (False, "offline: the monitor reports the gateway unreachable")
        with pytest.raises(GatewayUnreachable, match="offline"):
            client.complete(CHAT)
        assert client.breaker.failures == 0  # known offline is not a gateway failure


class FailFirstConnect(httpx.BaseTransport):
    """Test double for a flaky network: the first POST fails to connect (nothing is sent)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.posts: list[bytes] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            self.posts.append(request.read())
            if len(self.posts) == 1:
                raise httpx.ConnectError("connection refused", request=request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


class BreakAfterSend(FailFirstConnect):
    """Test double: the POST reaches the gateway, then the connection breaks before the answer."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "POST":
            self.posts.append(request.read())
            response.close()
            raise httpx.ReadError("connection reset", request=request)
        return response


def test_connect_failure_is_retried_with_a_fresh_envelope(gateway: RunningGateway) -> None:
    transport = FailFirstConnect()
    config = OffloadConfig(url=gateway.url, credential=gateway.home.credential, backoff_s=0.01)
    with OffloadClient(config, transport=transport) as client:
        assert client.complete(CHAT).text == ANSWER
    first, second = transport.posts
    assert first != second  # a new nonce and response key: no envelope is ever sent twice


def test_failure_after_the_request_was_sent_is_not_retried(gateway: RunningGateway) -> None:
    transport = BreakAfterSend()
    config = OffloadConfig(url=gateway.url, credential=gateway.home.credential, retries=3)
    with (
        OffloadClient(config, transport=transport) as client,
        pytest.raises(GatewayUnreachable, match="broke"),
    ):
        client.complete(CHAT)
    assert len(transport.posts) == 1


def _relay(target: str, *, flip_response_byte: int | None, forged_keys: bool) -> ThreadedServer:
    """A real HTTP relay in the path (the threat model's "relay"), optionally hostile."""
    identity = Ed25519PrivateKey.generate()

    async def forward(request: web.Request) -> web.Response:
        if forged_keys and request.path == "/v1/keys":
            own = PublishedKey("evil-1", "x25519", bytes(32), 2**40)
            return web.json_response(sign_keys_document((own,), identity))
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method,
                target + request.path,
                data=await request.read(),
                headers={"Content-Type": request.headers.get("Content-Type", "")},
            ) as resp,
        ):
            body = bytearray(await resp.read())
            ctype = resp.headers.get("Content-Type", "")
        if flip_response_byte is not None and "sealed" in ctype:
            body[flip_response_byte % len(body)] ^= 0x01
        return web.Response(body=bytes(body), status=resp.status, headers={"Content-Type": ctype})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    return ThreadedServer(app).start()


@pytest.fixture
def relays(gateway: RunningGateway) -> Iterator[dict[str, ThreadedServer]]:
    made = {
        "tamper": _relay(gateway.url, flip_response_byte=-5, forged_keys=False),
        "forge": _relay(gateway.url, flip_response_byte=None, forged_keys=True),
    }
    yield made
    for relay in made.values():
        relay.stop()


def test_relay_that_modifies_the_answer_is_caught(
    gateway: RunningGateway, relays: dict[str, ThreadedServer]
) -> None:
    with make_client(relays["tamper"].url, gateway.home.credential) as client:
        with pytest.raises(SealedReplyInvalid, match="does not authenticate"):
            client.complete(CHAT)
        with pytest.raises(SealedReplyInvalid):
            list(client.stream(CHAT))


def test_relay_that_serves_its_own_keys_is_caught(
    gateway: RunningGateway, relays: dict[str, ThreadedServer]
) -> None:
    with (
        make_client(relays["forge"].url, gateway.home.credential) as client,
        pytest.raises(GatewayRejected) as info,
    ):
        client.complete(CHAT)
    assert info.value.code == "untrusted_keys"


def test_gateway_killed_mid_stream_falls_back_to_the_local_engine(
    gateway_home: GatewayHome, fixed_upstream: str, engine: Engine
) -> None:
    proc, url = spawn_gateway(gateway_home.state_dir, fixed_upstream)
    try:
        # What the runtime does: stream from the cloud; on any OffloadError answer locally.
        with make_client(url, gateway_home.credential, deadline_s=30.0) as client:
            stream = client.stream({**CHAT, "model": "slow"})
            received = [next(stream)]
            proc.send_signal(signal.SIGKILL)
            with pytest.raises(OffloadError) as info:
                received.extend(stream)
        # The break is seen as a broken connection or a truncated stream: not as the 30 s
        # deadline passing.
        assert isinstance(info.value, GatewayUnreachable | SealedReplyInvalid), info.value
        assert received and "".join(received) != ANSWER
        prompt = [Message("user", "Say hello.")]
        local = generate(engine, prompt, GenerationParams(max_tokens=8))
        reason = f"answered locally: {info.value}"
        assert local.text.strip() and "gateway" in reason
    finally:
        proc.kill()
        proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()


def test_replayed_keys_documents_cannot_bring_back_a_retired_key(gateway_home: GatewayHome) -> None:
    # A relay holding genuine documents the gateway signed earlier, when "retired-1" was
    # current (e.g. its private key has since leaked), serves them again.
    identity = load_identity(gateway_home.state_dir)
    (current,) = (k.published for k in list_keys(gateway_home.state_dir))
    retired = PublishedKey("retired-1", "x25519", current.public_key, 2**40)
    now = int(time.time())
    served = [
        sign_keys_document((current,), identity, issued_at=now),
        # rolled back, further than replicas' lists differ (KEYS_ROLLBACK_TOLERANCE_S)
        sign_keys_document((retired,), identity, issued_at=now - 300),
        sign_keys_document((retired,), identity, issued_at=now - 3600),  # too old
    ]

    async def keys(request: web.Request) -> web.Response:
        return web.json_response(served.pop(0))

    app = web.Application()
    app.router.add_get("/v1/keys", keys)
    relay = ThreadedServer(app).start()
    credential = DeviceCredential.parse(gateway_home.credential)
    cache = KeyCache(relay.url, credential, "x25519", ttl_s=0.0)
    try:
        with httpx.Client() as http:
            assert cache.current(http, httpx.Timeout(5.0)).key_id == current.key_id
            for expected in ("older than one already accepted", "issued 36"):
                with pytest.raises(GatewayRejected, match=expected) as info:
                    cache.current(http, httpx.Timeout(5.0))
                assert info.value.code == "stale_keys"
    finally:
        relay.stop()


class _KeysRelay:
    """A relay serving, in turn, keys documents the gateway signed: the current key now, and
    a key since retired in a document `rolled_back_s` older (still fresh enough to pass the
    age check; the current key again with `current=True`: a replica's list)."""

    def __init__(self, home: GatewayHome) -> None:
        identity = load_identity(home.state_dir)
        (self.current,) = (k.published for k in list_keys(home.state_dir))
        self.retired = PublishedKey("retired-1", "x25519", self.current.public_key, 2**40)
        self.now = int(time.time())
        self.served: list[dict[str, object]] = []
        self._identity = identity

        async def keys(request: web.Request) -> web.Response:
            return web.json_response(self.served.pop(0))

        app = web.Application()
        app.router.add_get("/v1/keys", keys)
        self.server = ThreadedServer(app).start()

    def serve(self, *, rolled_back_s: int = 0, current: bool = False) -> None:
        key = self.retired if rolled_back_s and not current else self.current
        self.served.append(
            sign_keys_document((key,), self._identity, issued_at=self.now - rolled_back_s)
        )

    def fetch(self, cache: KeyCache) -> PublishedKey:
        with httpx.Client() as http:
            return cache.current(http, httpx.Timeout(5.0))


@pytest.fixture
def keys_relay(gateway_home: GatewayHome) -> Iterator[_KeysRelay]:
    relay = _KeysRelay(gateway_home)
    yield relay
    relay.server.stop()


def _cache(relay: _KeysRelay, home: GatewayHome, state: Path | None) -> KeyCache:
    credential = DeviceCredential.parse(home.credential)
    return KeyCache(relay.server.url, credential, "x25519", ttl_s=0.0, state_path=state)


def test_a_keys_list_replayed_after_a_restart_is_still_refused(
    keys_relay: _KeysRelay, gateway_home: GatewayHome, tmp_path: Path
) -> None:
    state = tmp_path / "state" / "gateway_keys.json"
    keys_relay.serve()
    assert keys_relay.fetch(_cache(keys_relay, gateway_home, state)) == keys_relay.current
    identity = b64e(DeviceCredential.parse(gateway_home.credential).gateway_identity)
    stored = json.loads(state.read_text())
    assert stored == {"version": 1, "newest_issued_at": {identity: keys_relay.now}}
    # "Restarted": a new cache on the same state file is served a list 5 minutes older.
    keys_relay.serve(rolled_back_s=300)
    with pytest.raises(GatewayRejected, match="older than one already accepted") as info:
        keys_relay.fetch(_cache(keys_relay, gateway_home, state))
    assert info.value.code == "stale_keys"
    # Without a state file (a library cache) only this process's memory holds the rule.
    keys_relay.serve(rolled_back_s=300)
    assert keys_relay.fetch(_cache(keys_relay, gateway_home, None)).key_id == "retired-1"


def test_lists_of_replicas_a_little_apart_are_accepted_across_restarts(
    keys_relay: _KeysRelay, gateway_home: GatewayHome, tmp_path: Path
) -> None:
    # Consecutive `tandem ask` runs (a new cache on the state file each) reach replicas behind
    # a load balancer: their lists may be a re-signing period (60 s) apart, or two with an
    # HTTP cache in front. Up to KEYS_ROLLBACK_TOLERANCE_S (120 s) older is still accepted.
    state = tmp_path / "gateway_keys.json"
    keys_relay.serve()
    assert keys_relay.fetch(_cache(keys_relay, gateway_home, state)) == keys_relay.current
    for behind in (60, 120, 0, 119):
        keys_relay.serve(rolled_back_s=behind, current=True)
        assert keys_relay.fetch(_cache(keys_relay, gateway_home, state)) == keys_relay.current
    identity = b64e(DeviceCredential.parse(gateway_home.credential).gateway_identity)
    stored = json.loads(state.read_text())["newest_issued_at"]
    assert stored == {identity: keys_relay.now}  # the newest accepted, not the last
    # Further back is a replayed list, refused (a retired key's list the same way).
    keys_relay.serve(rolled_back_s=121, current=True)
    with pytest.raises(GatewayRejected, match=r"by 121 s, at most 120\): a replayed") as info:
        keys_relay.fetch(_cache(keys_relay, gateway_home, state))
    assert info.value.code == "stale_keys"


def test_after_a_rotation_the_device_seals_to_the_newest_key_even_if_it_ends_sooner(
    gateway: RunningGateway, gateway_home: GatewayHome
) -> None:
    (old,) = list_keys(gateway_home.state_dir)
    # The new key is valid 30 days, the old one 90: devices must move to the new one anyway
    # (they used to pick the key that ends last, and so kept the old key until it ended).
    new = generate_key(gateway_home.state_dir, valid_days=30, now=time.time() + 1)
    assert new.published.not_after < old.published.not_after
    credential = DeviceCredential.parse(gateway_home.credential)
    deadline = time.monotonic() + 10
    while True:  # the gateway re-reads its keys folder within a second
        doc = httpx.get(gateway.url + "/v1/keys").json()
        if len(doc["keys"]) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [k["key_id"] for k in doc["keys"]] == [old.key_id, new.key_id]  # oldest first
    cache = KeyCache(gateway.url, credential, "x25519", ttl_s=0.0)
    with httpx.Client() as http:
        assert cache.current(http, httpx.Timeout(5.0)).key_id == new.key_id
    with make_client(gateway.url, gateway_home.credential) as client:
        assert client.complete(CHAT).text == ANSWER


def test_the_state_file_keeps_the_newest_list_of_each_gateway(
    keys_relay: _KeysRelay, gateway_home: GatewayHome, tmp_path: Path
) -> None:
    state = tmp_path / "gateway_keys.json"
    other = b64e(bytes(range(32)))
    state.write_text(json.dumps(
        {"version": 1, "newest_issued_at": {other: keys_relay.now + 100, "gone": 1}}
    ))
    # Another gateway's newer list does not hold this one back.
    keys_relay.serve(rolled_back_s=30)
    older = _cache(keys_relay, gateway_home, state)
    assert keys_relay.fetch(older).key_id == "retired-1"
    keys_relay.serve()
    newer = _cache(keys_relay, gateway_home, state)
    assert keys_relay.fetch(newer).key_id == keys_relay.current.key_id
    # The cache that saw only the older list saves it again: the newer one stays.
    keys_relay.serve(rolled_back_s=10)
    assert keys_relay.fetch(older).key_id == "retired-1"
    identity = b64e(DeviceCredential.parse(gateway_home.credential).gateway_identity)
    stored = json.loads(state.read_text())["newest_issued_at"]
    # An entry too old to refuse anything ("gone") is dropped.
    assert stored == {other: keys_relay.now + 100, identity: keys_relay.now}


def test_processes_sharing_the_keys_state_file_keep_each_others_entries(tmp_path: Path) -> None:
    # Each writer stands for a process (a CLI run beside `tandem serve`): its own open file,
    # so only the file lock orders their read-merge-writes; without it, most entries of a
    # run are lost to a writer that read the file before another's rename.
    state = tmp_path / "gateway_keys.json"
    now, writers, rounds = int(time.time()), 6, 25
    start = threading.Barrier(writers)

    def write(g: int) -> None:
        start.wait()
        for r in range(rounds):
            offload_keys._save(state, f"gateway-{g}", now + r)

    threads = [threading.Thread(target=write, args=(g,)) for g in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stored = json.loads(state.read_text())["newest_issued_at"]
    assert stored == {f"gateway-{g}": now + rounds - 1 for g in range(writers)}
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"[1, 2]", b'{"version": 1, "newest_issued_at": {"x": "soon"}}',
     b"\xff\xfe{", None],
    ids=["not-json", "a-list", "wrong-type", "not-utf8", "a-directory"],
)
def test_an_unusable_keys_state_file_is_a_warning_not_a_stop(
    keys_relay: _KeysRelay,
    gateway_home: GatewayHome,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    content: bytes | None,
) -> None:
    state = tmp_path / "gateway_keys.json"
    if content is None:
        state.mkdir()
    else:
        state.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="tandem.offload"):
        cache = _cache(keys_relay, gateway_home, state)
        keys_relay.serve()
        assert keys_relay.fetch(cache).key_id == keys_relay.current.key_id
    assert "gateway keys state" in caplog.text and str(state) in caplog.text
    if content is not None:  # replaced by a good one
        assert json.loads(state.read_text())["version"] == 1
        keys_relay.serve(rolled_back_s=300)
        with pytest.raises(GatewayRejected, match="older than one already accepted"):
            keys_relay.fetch(_cache(keys_relay, gateway_home, state))


def test_a_stored_list_from_the_future_is_ignored_rather_than_refusing_every_list(
    keys_relay: _KeysRelay, gateway_home: GatewayHome, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    state = tmp_path / "gateway_keys.json"
    identity = b64e(DeviceCredential.parse(gateway_home.credential).gateway_identity)
    a_year = 365 * 86_400
    state.write_text(json.dumps(
        {"version": 1, "newest_issued_at": {identity: keys_relay.now + a_year}}
    ))
    with caplog.at_level(logging.WARNING, logger="tandem.offload"):
        cache = _cache(keys_relay, gateway_home, state)
    assert "from the future" in caplog.text
    keys_relay.serve()
    assert keys_relay.fetch(cache).key_id == keys_relay.current.key_id


def test_the_runtime_keeps_the_newest_keys_list_in_its_state_directory(
    gateway: RunningGateway,
) -> None:
    from runtime.config import load_config
    from runtime.facade import Runtime

    assert default_state_path() == (
        Path(os.environ["XDG_STATE_HOME"]) / "tandem" / "gateway_keys.json"
    )
    cfg = load_config(env={}).replace(
        offload=OffloadConfig(url=gateway.url, credential=gateway.home.credential))
    identity = b64e(DeviceCredential.parse(gateway.home.credential).gateway_identity)
    with Runtime(cfg) as rt:  # the model is loaded on first local use: never, here
        assert rt.cloud is not None
        assert rt.cloud.client.complete(CHAT).text == ANSWER
    stored = json.loads(default_state_path().read_text())["newest_issued_at"]
    assert time.time() - 600 < stored[identity] <= time.time()


def test_a_stream_closed_before_iterating_releases_the_half_open_trial(
    gateway: RunningGateway,
) -> None:
    # One failure opens the breaker; with no cool-down the next call is the half-open trial.
    with make_client(
        gateway.url, gateway.home.credential, breaker_failures=1, breaker_reset_s=0.0
    ) as client:
        with pytest.raises(GatewayRejected):
            client.complete({**CHAT, "model": "fail"})
        assert client.breaker.failures == 1
        client.stream(CHAT).close()  # claims the trial, then is abandoned unread
        assert client.available() == (True, "")
        assert client.complete(CHAT).text == ANSWER
        assert client.breaker.failures == 0


# --- the device's clock against the gateway's (docs/protocol.md, section 5) ------------------


class NoteStatuses(httpx.BaseTransport):
    """Passes every request through and notes the status of each POST's answer."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.statuses: list[int] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "POST":
            self.statuses.append(response.status_code)
        return response

    def close(self) -> None:
        self.inner.close()


def test_a_device_clock_minutes_behind_is_corrected_by_the_gateways(
    gateway: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    transport = NoteStatuses()
    config = OffloadConfig(url=gateway.url, credential=gateway.home.credential)
    behind = 150.0  # outside the gateway's ±60 s window
    with OffloadClient(config, transport=transport, clock=lambda: time.time() - behind) as client:
        with caplog.at_level(logging.WARNING, logger="runtime.offload"):
            assert client.complete(CHAT).text == ANSWER
        assert transport.statuses == [425, 200]  # refused once, resealed by the gateway's clock
        assert abs(client.clock_offset_s - behind) < 5
        assert re.search(r"clock is -1[45]\d\.\d s off the gateway's", caplog.text)
        # Later requests are stamped by the learned offset: no more refusals.
        assert "".join(client.stream(CHAT)) == ANSWER
        assert client.complete(CHAT).text == ANSWER
    assert transport.statuses == [425, 200, 200, 200]


def test_a_request_stamped_before_a_gateway_restart_is_resealed(
    start_gateway: GatewayFactory,
) -> None:
    # A device 20 s behind (within the window) meets a gateway that has just started with its
    # nonce store in memory: every envelope it stamps is from before the start, so it is
    # refused until the device corrects its stamps (before: for 20 s).
    gw = start_gateway()
    transport = NoteStatuses()
    config = OffloadConfig(url=gw.url, credential=gw.home.credential)
    with OffloadClient(config, transport=transport, clock=lambda: time.time() - 20) as client:
        assert client.complete(CHAT).text == ANSWER
    assert transport.statuses == [425, 200]


def test_a_clock_far_off_is_refused_with_what_to_do(gateway: RunningGateway) -> None:
    transport = NoteStatuses()
    config = OffloadConfig(url=gateway.url, credential=gateway.home.credential)
    with OffloadClient(config, transport=transport, clock=lambda: time.time() - 7200) as client:
        with pytest.raises(
            GatewayRejected, match=r"clock is -7200 s off .* set the device clock"
        ) as err:
            client.complete(CHAT)
        assert err.value.status == 425 and err.value.code == "stale_timestamp"
        assert client.clock_offset_s == 0  # nothing learned from it
    assert transport.statuses == [425]  # and no retry


class RefuseEveryStamp(httpx.BaseTransport):
    """Test double for a hostile relay (or a gateway whose clock jumps): every POST gets a 425
    naming a gateway clock 100 s ahead; keys requests pass through to the real gateway."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.posts = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method != "POST":
            return self.inner.handle_request(request)
        self.posts += 1
        error = {"message": "envelope timestamp is -100 s from the gateway clock",
                 "type": "invalid_request_error", "code": "stale_timestamp",
                 "gateway_time_ms": int((time.time() + 100) * 1000)}
        return httpx.Response(425, json={"error": error})

    def close(self) -> None:
        self.inner.close()


def test_a_stamp_refused_again_after_resealing_is_not_retried_forever(
    gateway: RunningGateway,
) -> None:
    transport = RefuseEveryStamp()
    config = OffloadConfig(url=gateway.url, credential=gateway.home.credential)
    with (
        OffloadClient(config, transport=transport) as client,
        pytest.raises(GatewayRejected, match="again, after resealing"),
    ):
        client.complete(CHAT)
    assert transport.posts == 2
