"""The gateway on a loopback port: sealed round trips, each rejection's own code, limits, ops.

The upstream is the fixed-response OpenAI-compatible server (a real HTTP server), except in
the embedded-engine tests, which use the real bundled model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import struct
import time
import types
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud_gateway import keys as keys_module
from cloud_gateway.fixed_upstream import ANSWER
from cloud_gateway.keys import KeyRing, generate_key, retire_key
from cloud_gateway.logs import JsonFormatter
from cloud_gateway.protocol import (
    REQUEST_CONTENT_TYPE,
    DeviceCredential,
    open_response,
    read_keys_document,
    seal_request,
    verify_keys_document,
)
from cloud_gateway.protocol import envelope as wire
from cloud_gateway.protocol.codec import b64e
from cloud_gateway.protocol.suites import public_key, suite
from kernels.base import Engine
from runtime.offload import OffloadClient, OffloadConfig
from runtime.offload_errors import GatewayRejected
from tests.conftest_gateway import (
    GatewayFactory,
    GatewayHome,
    RunningGateway,
    free_port,
    wait_for_fresh_minute,
)

CHAT = {"model": "fixed", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}


def client_for(gw: RunningGateway, credential: str | None = None, **kw: object) -> OffloadClient:
    cred = credential or gw.home.credential
    return OffloadClient(OffloadConfig(url=gw.url, credential=cred, **kw))  # type: ignore[arg-type]


def _url(gw: RunningGateway | str) -> str:
    return gw if isinstance(gw, str) else gw.url


def sealed(
    gw: RunningGateway | str, chat: dict[str, object] = CHAT, **kw: object
) -> tuple[bytes, bytes]:
    """A sealed envelope for the gateway's current key; (envelope, response key). `gw` may be
    a gateway process's base URL, with the device's `credential=` given."""
    home_credential = "" if isinstance(gw, str) else gw.home.credential
    cred = DeviceCredential.parse(kw.pop("credential", home_credential))  # type: ignore[arg-type]
    doc = httpx.get(_url(gw) + "/v1/keys").json()
    (key,) = verify_keys_document(doc, cred.identity_key())
    s = seal_request(
        json.dumps(chat).encode(),
        kem=key.kem,
        key_id=key.key_id,
        gateway_key=key.public_key,
        device_id=cred.device_id,
        device_key=cred.signing_key(),
        **kw,  # type: ignore[arg-type]
    )
    return s.envelope, s.response_key


def sealed_raw(gw: RunningGateway, meta: bytes, body: bytes) -> bytes:
    """An envelope sealed and signed like a device's, around any metadata and body bytes."""
    cred = DeviceCredential.parse(gw.home.credential)
    (key,) = verify_keys_document(httpx.get(gw.url + "/v1/keys").json(), cred.identity_key())
    header = wire.encode_header(key.kem, key.key_id)
    signature = cred.signing_key().sign(wire._SIGNATURE_CONTEXT + header + meta + body)
    plaintext = signature + struct.pack(">H", len(meta)) + meta + body
    gateway_key = public_key(key.kem, key.public_key)
    return header + suite(key.kem).encrypt(plaintext, gateway_key, info=wire._INFO_PREFIX + header)


def device_meta(**fields: Any) -> bytes:
    meta = {
        "device": "phone",
        "ts_ms": int(time.time() * 1000),
        "nonce": b64e(os.urandom(16)),
        "response_key": b64e(os.urandom(32)),
    }
    return json.dumps({**meta, **fields}).encode()


def post(
    gw: RunningGateway | str, body: bytes, ctype: str = REQUEST_CONTENT_TYPE
) -> httpx.Response:
    return httpx.post(
        _url(gw) + "/v1/sealed/chat/completions", content=body, headers={"Content-Type": ctype}
    )


def error_code(resp: httpx.Response) -> str:
    return str(resp.json()["error"]["code"])


def test_keys_are_published_signed_by_the_gateway_identity(gateway: RunningGateway) -> None:
    cred = DeviceCredential.parse(gateway.home.credential)
    doc = httpx.get(gateway.url + "/v1/keys").json()
    keys = verify_keys_document(doc, cred.identity_key())
    assert [k.key_id for k in keys] == [gateway.home.key_id]
    assert doc["keys"][0]["suite"] == "DHKEM(X25519,HKDF-SHA256)/HKDF-SHA256/ChaCha20Poly1305"
    assert doc["keys"][0]["not_after"] > time.time()


def test_sealed_completion_comes_back_unsealed_with_usage(gateway: RunningGateway) -> None:
    client = client_for(gateway)
    reply = client.complete(CHAT)
    client.close()
    assert reply.text == ANSWER
    assert reply.usage == {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}
    assert reply.key_id == gateway.home.key_id
    assert reply.timings["total_ms"] >= reply.timings["first_byte_ms"] > 0


def test_sealed_stream_yields_the_answer_in_order(gateway: RunningGateway) -> None:
    client = client_for(gateway)
    stream = client.stream(CHAT)
    deltas = list(stream)
    client.close()
    assert "".join(deltas) == ANSWER
    assert len(deltas) == len(ANSWER.split())
    assert stream.usage["completion_tokens"] == 9
    assert stream.finish_reason == "stop"


def test_the_response_is_sealed_under_the_request_response_key(gateway: RunningGateway) -> None:
    envelope, response_key = sealed(gateway)
    resp = post(gateway, envelope)
    assert resp.status_code == 200
    assert ANSWER.encode() not in resp.content  # nothing readable on the wire
    assert (
        json.loads(open_response(response_key, resp.content))["choices"][0]["message"]["content"]
        == ANSWER
    )


def test_replayed_envelope_is_rejected(gateway: RunningGateway) -> None:
    envelope, _ = sealed(gateway)
    assert post(gateway, envelope).status_code == 200
    replay = post(gateway, envelope)
    assert (replay.status_code, error_code(replay)) == (409, "replayed_nonce")


def test_stale_and_future_timestamps_are_rejected(gateway: RunningGateway) -> None:
    now_ms = int(time.time() * 1000)
    for skew_ms in (-61_000, 61_000):
        envelope, _ = sealed(gateway, now_ms=now_ms + skew_ms)
        resp = post(gateway, envelope)
        assert (resp.status_code, error_code(resp)) == (425, "stale_timestamp")


def test_each_bad_envelope_gets_its_own_status_and_name(gateway: RunningGateway) -> None:
    envelope, _ = sealed(gateway)
    kid_at = 6  # after magic, version, suite, key id length
    other_kid = envelope[:kid_at] + b"z" + envelope[kid_at + 1 :]
    cases = {
        "malformed": (b"not an envelope at all", 400, "malformed_envelope"),
        "version": (envelope[:3] + b"\x07" + envelope[4:], 400, "unsupported_version"),
        "key id": (other_kid, 421, "unknown_key_id"),
        "tag": (envelope[:-1] + bytes([envelope[-1] ^ 0x40]), 422, "decryption_failed"),
    }
    for name, (body, status, code) in cases.items():
        resp = post(gateway, body)
        assert (resp.status_code, error_code(resp)) == (status, code), name
        assert resp.json()["error"]["type"] == "invalid_request_error"
    wrong_type = post(gateway, envelope, ctype="application/json")
    assert (wrong_type.status_code, error_code(wrong_type)) == (415, "unsupported_media_type")


def test_oversized_body_is_rejected_before_reading_it(start_gateway: GatewayFactory) -> None:
    gw = start_gateway(max_body_bytes=4096)
    resp = post(gw, b"\0" * 10_000)
    assert (resp.status_code, error_code(resp)) == (413, "payload_too_large")
    # Size is checked before type, as the admission table in docs/protocol.md lists them.
    resp = post(gw, b"\0" * 10_000, ctype="application/json")
    assert (resp.status_code, error_code(resp)) == (413, "payload_too_large")


def test_unknown_and_revoked_devices_are_refused(
    start_gateway: GatewayFactory, gateway_home: GatewayHome
) -> None:
    gw = start_gateway(device_cache_s=0.0)
    tablet = gateway_home.enroll("tablet")
    envelope, _ = sealed(gw, credential=tablet)
    assert post(gw, envelope).status_code == 200
    gateway_home.revoke("tablet")
    envelope, _ = sealed(gw, credential=tablet)
    resp = post(gw, envelope)
    assert (resp.status_code, error_code(resp)) == (403, "revoked_device")
    stranger = DeviceCredential("ghost", bytes(32), DeviceCredential.parse(tablet).gateway_identity)
    envelope, _ = sealed(gw, credential=stranger.encode())
    resp = post(gw, envelope)
    assert (resp.status_code, error_code(resp)) == (401, "bad_signature")


def test_names_cannot_be_probed_without_a_device_key(
    start_gateway: GatewayFactory, gateway_home: GatewayHome
) -> None:
    # Unknown, revoked and enrolled names, each with a key that is not theirs: one answer.
    gw = start_gateway(device_cache_s=0.0)
    identity = DeviceCredential.parse(gateway_home.credential).gateway_identity
    gateway_home.enroll("tablet")
    gateway_home.revoke("tablet")
    answers = set()
    for name in ("ghost", "tablet", "phone"):
        forged = DeviceCredential(name, bytes(range(32)), identity).encode()
        resp = post(gw, sealed(gw, credential=forged)[0])
        answers.add((resp.status_code, resp.text))
    assert answers == {
        (
            401,
            '{"error": {"message": "the device signature does not verify", '
            '"type": "authentication_error", "code": "bad_signature"}}',
        )
    }


def test_a_device_cannot_sign_as_another(gateway: RunningGateway) -> None:
    # "phone" is enrolled, but this key is not phone's: the signature must fail.
    cred = DeviceCredential.parse(gateway.home.credential)
    forged = DeviceCredential("phone", bytes(range(32)), cred.gateway_identity).encode()
    envelope, _ = sealed(gateway, credential=forged)
    resp = post(gateway, envelope)
    assert (resp.status_code, error_code(resp)) == (401, "bad_signature")


def test_requests_over_the_minute_limit_get_429_with_retry_after(
    start_gateway: GatewayFactory,
) -> None:
    gw = start_gateway(requests_per_minute=2)
    wait_for_fresh_minute()
    statuses = [post(gw, sealed(gw)[0]) for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    assert error_code(statuses[2]) == "rate_limited"
    assert 1 <= int(statuses[2].headers["Retry-After"]) <= 60
    metrics = httpx.get(gw.url + "/metrics").text
    assert 'tandem_gateway_rate_limited_total{limit="requests_per_minute"} 1.0' in metrics


def test_token_quota_survives_a_restart(start_gateway: GatewayFactory) -> None:
    # Each fixed answer costs 21 tokens: two fit under 30 (the check is before the request).
    first = start_gateway(tokens_per_day=30)
    assert [post(first, sealed(first)[0]).status_code for _ in range(2)] == [200, 200]
    first.server.stop()  # a clean shutdown flushes usage to SQLite
    second = start_gateway(tokens_per_day=30)
    resp = post(second, sealed(second)[0])
    assert (resp.status_code, error_code(resp)) == (429, "rate_limited")
    assert "tokens" in resp.json()["error"]["message"]
    assert int(resp.headers["Retry-After"]) <= 86_400


def test_upstream_failure_reaches_the_device_sealed(gateway: RunningGateway) -> None:
    envelope, key = sealed(gateway, {**CHAT, "model": "fail"})
    resp = post(gateway, envelope)
    assert resp.status_code == 502
    assert b"upstream failure" not in resp.content
    assert json.loads(open_response(key, resp.content))["error"]["code"] == "upstream_error"
    client = client_for(gateway)
    with pytest.raises(GatewayRejected) as info:
        client.complete({**CHAT, "model": "fail"})
    client.close()
    assert (info.value.status, info.value.code) == (502, "upstream_error")


def test_health_readiness_and_metrics(
    start_gateway: GatewayFactory, gateway: RunningGateway
) -> None:
    assert httpx.get(gateway.url + "/healthz").json() == {"status": "alive"}
    assert httpx.get(gateway.url + "/readyz").status_code == 200
    with client_for(gateway) as client:
        client.complete(CHAT)
    post(gateway, b"junk")
    metrics = httpx.get(gateway.url + "/metrics").text
    assert 'tandem_gateway_requests_total{outcome="ok"} 1.0' in metrics
    assert 'tandem_gateway_rejections_total{code="malformed_envelope"} 1.0' in metrics
    assert 'tandem_gateway_tokens_total{kind="completion"} 9.0' in metrics
    assert 'tandem_gateway_request_seconds_count{kind="complete"} 1.0' in metrics
    dead = start_gateway(upstream_url=f"http://127.0.0.1:{free_port()}/v1")
    not_ready = httpx.get(dead.url + "/readyz")
    assert not_ready.status_code == 503
    assert "unreachable" in not_ready.json()["reason"]


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def gateway_log(level: int | None = logging.DEBUG) -> Iterator[list[logging.LogRecord]]:
    """The records the gateway logs inside the block (from `level` up; None: the logger's
    own level is left as it is)."""
    logger, handler = logging.getLogger("tandem.gateway"), _Records()
    before = logger.level
    logger.addHandler(handler)
    if level is not None:
        logger.setLevel(level)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before)


def hang_up_after_first_chunk(gw: RunningGateway, body: dict[str, Any]) -> None:
    """Stream `body` through `gw`, read the first sealed chunk, then close the connection."""
    envelope, _ = sealed(gw, {**body, "stream": True})
    headers = {"Content-Type": REQUEST_CONTENT_TYPE}
    url = gw.url + "/v1/sealed/chat/completions"
    with httpx.stream("POST", url, content=envelope, headers=headers) as resp:
        assert resp.status_code == 200
        next(resp.iter_raw())


def served_records(records: list[logging.LogRecord], polls: int) -> list[logging.LogRecord]:
    """The "served" records, polled every 0.05 s up to `polls` times until there is one."""
    served: list[logging.LogRecord] = []
    for _ in range(polls):
        served = [r for r in records if r.getMessage() == "served"]
        if served:
            break
        time.sleep(0.05)
    return served


def test_logs_carry_no_request_or_answer_content(gateway: RunningGateway) -> None:
    secret = "my-card-is-4111-1111-1111-1111"
    with gateway_log() as records:
        with client_for(gateway) as client:
            client.complete({**CHAT, "messages": [{"role": "user", "content": secret}]})
            list(client.stream({**CHAT, "messages": [{"role": "user", "content": secret}]}))
        post(gateway, b"junk")
    lines = [JsonFormatter().format(r) for r in records]
    assert len(lines) >= 3
    served = [json.loads(line) for line in lines if '"served"' in line]
    assert {s["outcome"] for s in served} == {"ok"} and served[0]["device"] == "phone"
    assert not any(secret in line or "quick brown" in line for line in lines)


def test_key_rotation_drops_no_request(gateway: RunningGateway) -> None:
    home = gateway.home
    client = client_for(gateway)
    assert client.complete(CHAT).key_id == home.key_id  # the client now caches the old key
    new = generate_key(home.state_dir, "x25519")
    assert client.complete(CHAT).key_id == home.key_id  # both keys valid: no change needed
    retire_key(home.state_dir, home.key_id)
    time.sleep(1.1)  # the gateway re-reads its keys folder at most once a second
    # The cached key is gone: 421 unknown_key_id, then a refresh and a reseal, transparently.
    assert client.complete(CHAT).key_id == new.key_id
    assert client.breaker.failures == 0
    client.close()
    keys = httpx.get(gateway.url + "/v1/keys").json()["keys"]
    assert [k["key_id"] for k in keys] == [new.key_id]


def test_replicas_sharing_a_keys_folder_publish_the_same_keys_document(
    gateway_home: GatewayHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [float(int(time.time()) // 60 * 60 + 30)]  # half a minute into one
    fake_time = types.SimpleNamespace(
        time=lambda: clock[0], monotonic=time.monotonic, strftime=time.strftime, gmtime=time.gmtime
    )
    monkeypatch.setattr(keys_module, "time", fake_time)
    start = clock[0] - 30
    replica_a = KeyRing(gateway_home.state_dir)
    first = replica_a.document()
    assert first["issued_at"] == start  # the minute's start, not the moment it was signed
    clock[0] += 10
    replica_b = KeyRing(gateway_home.state_dir)  # a replica started later, the same minute
    assert replica_b.document() == first  # the same document, signature included
    clock[0] += 25  # the next minute: both re-sign, to the same new document
    assert replica_a.document()["issued_at"] == start + 60
    assert replica_a.document() == replica_b.document()
    credential = DeviceCredential.parse(gateway_home.credential)
    doc = read_keys_document(replica_b.document(), credential.identity_key(), now=clock[0])
    assert [k.key_id for k in doc.keys] == [gateway_home.key_id]


def test_post_quantum_hybrid_suite_round_trips(gateway: RunningGateway) -> None:
    generate_key(gateway.home.state_dir, "mlkem768-x25519")
    time.sleep(1.1)  # let the gateway notice the new key
    client = client_for(gateway, kem="mlkem768-x25519")
    reply = client.complete(CHAT)
    client.close()
    assert reply.text == ANSWER
    assert reply.key_id.startswith("mlkem-")


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_malformed_input_never_gets_a_5xx(gateway: RunningGateway, data: st.DataObject) -> None:
    envelope, _ = sealed(gateway)
    body = data.draw(
        st.one_of(
            st.binary(max_size=3000),
            st.builds(
                lambda i, x: envelope[:i] + bytes([envelope[i] ^ x]) + envelope[i + 1 :],
                st.integers(0, len(envelope) - 1),
                st.integers(1, 255),
            ),
            st.builds(lambda n: envelope[:n], st.integers(0, len(envelope) - 1)),
        ),
        label="body",
    )
    resp = post(gateway, body)
    assert 400 <= resp.status_code < 500, resp.text
    assert isinstance(resp.json()["error"]["code"], str)


@pytest.mark.slow
def test_embedded_engine_answers_sealed_requests(
    start_gateway: GatewayFactory, engine: Engine
) -> None:
    gw = start_gateway(upstream_url="", engine=engine)
    assert httpx.get(gw.url + "/readyz").json() == {"status": "ready"}
    # A generous deadline: this test is about the answer, and CI shares 2 cores.
    client = client_for(gw, deadline_s=300.0)
    chat = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 12}
    reply = client.complete(chat)
    assert reply.text.strip()
    assert 0 < reply.usage["completion_tokens"] <= 12
    stream = client.stream(chat)
    assert "".join(stream) == reply.text  # greedy decoding: the same answer streamed
    assert stream.usage["completion_tokens"] == reply.usage["completion_tokens"]
    client.close()


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=st.one_of(
        _json_values,
        st.fixed_dictionaries(
            {"messages": _json_values},
            optional={"max_tokens": _json_values, "stream": _json_values, "stop": _json_values},
        ),
    )
)
def test_well_sealed_but_invalid_chat_requests_never_get_a_5xx(
    start_gateway: GatewayFactory, body: object
) -> None:
    gw = start_gateway(requests_per_minute=0, tokens_per_day=0)
    envelope, _ = sealed(gw, body)  # type: ignore[arg-type]
    resp = post(gw, envelope)
    assert resp.status_code in (200, 400), resp.text
    if resp.status_code == 400:
        assert error_code(resp) == "invalid_request"


def test_well_sealed_but_pathological_payloads_get_a_4xx(gateway: RunningGateway) -> None:
    chat = json.dumps(CHAT).encode()
    cases = {
        "nested meta": (b"[" * 60_000, chat, 400, "malformed_envelope"),
        "huge ts_ms": (device_meta(ts_ms=10**400), chat, 425, "stale_timestamp"),
        "negative huge ts_ms": (device_meta(ts_ms=-(10**400)), chat, 425, "stale_timestamp"),
        "nested body": (device_meta(), b"[" * 100_000, 400, "invalid_request"),
    }
    for name, (meta, body, status, code) in cases.items():
        resp = post(gateway, sealed_raw(gateway, meta, body))
        assert (resp.status_code, error_code(resp)) == (status, code), name
    assert post(gateway, sealed_raw(gateway, device_meta(), chat)).status_code == 200


class _BrokenUpstream:
    """An upstream with a bug: it raises something that is not an `UpstreamError`."""

    async def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("a bug")

    async def stream(self, request: dict[str, Any]) -> Any:
        raise RuntimeError("a bug")
        yield b""

    async def ready(self) -> tuple[bool, str]:
        return True, ""

    async def close(self) -> None:
        pass


def test_internal_errors_are_counted_in_the_metrics(start_gateway: GatewayFactory) -> None:
    gw = start_gateway(upstream=_BrokenUpstream())
    resp = post(gw, sealed(gw)[0])
    assert (resp.status_code, error_code(resp)) == (500, "internal_error")
    assert resp.json()["error"]["message"] == "internal error"
    metrics = httpx.get(gw.url + "/metrics").text
    assert 'tandem_gateway_requests_total{outcome="internal_error"} 1.0' in metrics


def test_a_bad_file_in_the_keys_folder_is_skipped_and_rotation_goes_on(
    gateway: RunningGateway,
) -> None:
    home = gateway.home
    envelope, _ = sealed(gateway)  # sealed to the first key, sent after it is retired
    (home.state_dir / "keys" / "backup.json").write_text("{}\n")
    new = generate_key(home.state_dir, "x25519")
    time.sleep(1.1)  # the gateway re-reads its keys folder at most once a second
    keys = httpx.get(gateway.url + "/v1/keys")
    assert keys.status_code == 200
    # Same-second keys are ordered by key id, so compare as sets.
    assert {k["key_id"] for k in keys.json()["keys"]} == {home.key_id, new.key_id}
    with client_for(gateway) as client:
        assert client.complete(CHAT).text == ANSWER
    retire_key(home.state_dir, home.key_id)
    time.sleep(1.1)
    keys = httpx.get(gateway.url + "/v1/keys")
    assert [k["key_id"] for k in keys.json()["keys"]] == [new.key_id]
    retired = post(gateway, envelope)
    assert (retired.status_code, error_code(retired)) == (421, "unknown_key_id")
    assert str(home.state_dir) not in keys.text + retired.text


def test_a_stream_may_outlast_the_upstream_timeout_while_chunks_keep_coming(
    start_gateway: GatewayFactory,
) -> None:
    # "slow" sends a chunk every 0.2 s, nine of them: longer in all than the 1 s timeout.
    gw = start_gateway(upstream_timeout_s=1.0)
    with client_for(gw) as client:
        stream = client.stream({**CHAT, "model": "slow"})
        assert "".join(stream) == ANSWER
        assert stream.finish_reason == "stop"
    # Silence still ends it: "hang" sends nothing.
    envelope, key = sealed(gw, {**CHAT, "model": "hang", "stream": True})
    resp = post(gw, envelope)
    assert resp.status_code == 504
    assert json.loads(open_response(key, resp.content))["error"]["code"] == "upstream_timeout"


def test_a_device_leaving_mid_stream_is_logged_as_a_disconnect_not_an_error(
    gateway: RunningGateway,
) -> None:
    with gateway_log() as records:
        hang_up_after_first_chunk(gateway, {**CHAT, "model": "slow"})
        # the gateway notices at its next write (0.2 s later)
        served = served_records(records, polls=200)
    assert [r.fields["outcome"] for r in served] == ["client_disconnected"]  # type: ignore[attr-defined]
    assert [r.getMessage() for r in records if r.levelno >= logging.WARNING] == []
    metrics = httpx.get(gateway.url + "/metrics").text
    assert 'tandem_gateway_requests_total{outcome="client_disconnected"} 1.0' in metrics


def test_answers_without_reported_usage_are_charged_an_estimate(
    start_gateway: GatewayFactory,
) -> None:
    # "hi" is 1 token, the 44-character answer 11 (4 characters a token): 12 >= 5.
    gw = start_gateway(tokens_per_day=5)
    first = post(gw, sealed(gw, {**CHAT, "model": "nousage"})[0])
    assert first.status_code == 200
    second = post(gw, sealed(gw, {**CHAT, "model": "nousage"})[0])
    assert second.status_code == 429
    assert error_code(second) == "rate_limited"
    assert "tokens" in second.json()["error"]["message"]
