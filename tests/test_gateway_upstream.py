"""How the gateway reports its upstream's failures, seen by a real device client.

A real gateway on a loopback port in front of the scriptable fake OpenAI server
(`tests/fake_openai.py`), and the real `OffloadClient` where what the device concludes (a
refusal, or a cloud failure counted by its circuit breaker) is the point.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from aiohttp import web

from cloud_gateway.limits import DAY
from cloud_gateway.protocol import REQUEST_CONTENT_TYPE, open_response
from cloud_gateway.usage_sqlite import SqliteUsageStore
from kernels.base import GenerationParams, ModelInfo, Prompt, TokenEvent, TokenStream, Usage
from runtime.offload import OffloadClient, OffloadConfig
from runtime.offload_errors import GatewayRejected
from tests.conftest_gateway import GatewayFactory, GatewayHome, RunningGateway, spawn_gateway
from tests.fake_openai import FakeOpenAI, chat_chunk, fake_openai, stop_after_first
from tests.test_gateway import (
    CHAT,
    gateway_log,
    hang_up_after_first_chunk,
    post,
    sealed,
    served_records,
)

API_KEY = "sk-test-0123456789abcdef"


@pytest.fixture
def fake() -> Iterator[tuple[FakeOpenAI, str]]:
    with fake_openai() as running:
        yield running


@pytest.fixture
def gw(
    fake: tuple[FakeOpenAI, str], start_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> RunningGateway:
    """A gateway whose upstream is the fake server, holding the API key `API_KEY`."""
    monkeypatch.setenv("TANDEM_TEST_UPSTREAM_KEY", API_KEY)
    return start_gateway(upstream_url=fake[1], upstream_api_key_env="TANDEM_TEST_UPSTREAM_KEY")


def answer_with(
    fake: FakeOpenAI, status: int, message: str, headers: dict[str, str] | None = None
) -> None:
    """Make the fake upstream answer every chat request with this OpenAI-style error."""

    async def handler(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        error = {"error": {"message": message, "type": "invalid_request_error", "code": None}}
        return web.json_response(error, status=status, headers=headers)

    fake.generate = handler


def device(gw: RunningGateway) -> OffloadClient:
    """A device whose breaker opens at the first cloud failure, so one miscount shows."""
    config = OffloadConfig(
        url=gw.url, credential=gw.home.credential, breaker_failures=1, breaker_reset_s=600
    )
    return OffloadClient(config)


def ask(client: OffloadClient, stream: bool) -> str:
    if stream:
        return "".join(client.stream(CHAT))
    return client.complete(CHAT).text


@pytest.mark.parametrize("status", [400, 404, 413, 422])
@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_refusing_the_request_is_a_400_that_leaves_the_breaker_closed(
    fake: tuple[FakeOpenAI, str], gw: RunningGateway, status: int, stream: bool
) -> None:
    answer_with(fake[0], status, f"The model `nope` does not exist (key {API_KEY})")
    with device(gw) as client:
        with pytest.raises(GatewayRejected) as info:
            ask(client, stream)
        assert client.breaker.failures == 0
        assert client.available() == (True, "")
    rejected = info.value
    assert (rejected.status, rejected.code) == (400, "invalid_request")
    assert f"upstream answered {status}: The model `nope` does not exist" in str(rejected)
    assert API_KEY not in str(rejected) and "[redacted]" in str(rejected)


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_429_is_passed_on_with_its_retry_after(
    fake: tuple[FakeOpenAI, str], gw: RunningGateway, stream: bool
) -> None:
    answer_with(fake[0], 429, "Rate limit reached", {"Retry-After": "17"})
    envelope, key = sealed(gw, {**CHAT, "stream": stream})
    resp = post(gw, envelope)
    assert (resp.status_code, resp.headers["Retry-After"]) == (429, "17")
    assert b"Rate limit" not in resp.content  # the error is sealed like every upstream error
    if not stream:
        assert json.loads(open_response(key, resp.content))["error"]["code"] == (
            "upstream_rate_limited"
        )
    with device(gw) as client:
        with pytest.raises(GatewayRejected) as info:
            ask(client, stream)
        assert client.breaker.failures == 0
        assert client.available() == (True, "")
    assert (info.value.status, info.value.code) == (429, "upstream_rate_limited")
    assert info.value.retry_after_s == 17.0


def test_an_upstream_429_without_retry_after_still_gets_one(
    fake: tuple[FakeOpenAI, str], gw: RunningGateway
) -> None:
    answer_with(fake[0], 429, "slow down")
    resp = post(gw, sealed(gw)[0])
    assert (resp.status_code, resp.headers["Retry-After"]) == (429, "1")


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_api_key_is_a_502_that_says_so_without_the_upstream_message(
    fake: tuple[FakeOpenAI, str], gw: RunningGateway, status: int
) -> None:
    answer_with(fake[0], status, f"Incorrect API key provided: {API_KEY[:7]}****cdef")
    with device(gw) as client:
        with pytest.raises(GatewayRejected) as info:
            client.complete(CHAT)
        assert client.breaker.failures == 1  # the cloud is broken until its operator acts
    assert (info.value.status, info.value.code) == (502, "upstream_auth_failed")
    assert "the upstream refused the gateway's API key" in str(info.value)
    assert "sk-test" not in str(info.value)
    metrics = httpx.get(gw.url + "/metrics").text
    assert 'tandem_gateway_requests_total{outcome="upstream_auth_failed"} 1.0' in metrics


def test_an_upstream_5xx_still_counts_as_a_cloud_failure(
    fake: tuple[FakeOpenAI, str], gw: RunningGateway
) -> None:
    answer_with(fake[0], 500, "internal error")
    with device(gw) as client:
        with pytest.raises(GatewayRejected) as info:
            client.complete(CHAT)
        assert client.breaker.failures == 1
    assert (info.value.status, info.value.code) == (502, "upstream_error")


def stream_with(fake: FakeOpenAI, chunks: list[dict[str, Any] | str], *, done: bool) -> None:
    async def handler(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        return await fake.stream(request, chunks, done=done)

    fake.generate = handler


def test_a_stream_cut_before_done_is_an_error_not_an_answer(
    fake: tuple[FakeOpenAI, str], gw: RunningGateway
) -> None:
    stream_with(fake[0], [chat_chunk("Hi")], done=False)
    with device(gw) as client:
        stream = client.stream(CHAT)
        assert next(stream) == "Hi"
        with pytest.raises(GatewayRejected) as info:
            next(stream)
        assert client.breaker.failures == 1
    assert (info.value.status, info.value.code) == (502, "upstream_error")
    assert "ended before its data: [DONE]" in str(info.value)


def fail_mid_stream(fake: FakeOpenAI, gw: RunningGateway, error: dict[str, Any]
                    ) -> tuple[GatewayRejected, int]:
    """Stream one chunk, then the upstream's `error` payload: what the device raises at it,
    and the failures its circuit breaker then counts."""
    stream_with(fake, [chat_chunk("Hi"), error], done=True)
    with device(gw) as client:
        stream = client.stream(CHAT)
        assert next(stream) == "Hi"
        with pytest.raises(GatewayRejected) as info:
            next(stream)
        return info.value, client.breaker.failures


def test_an_error_payload_mid_stream_is_the_stream_error_not_a_chunk(
    fake: tuple[FakeOpenAI, str], gw: RunningGateway
) -> None:
    error = {"error": {"message": "the model crashed", "type": "server_error", "code": 500}}
    rejected, _ = fail_mid_stream(fake[0], gw, error)
    assert (rejected.status, rejected.code) == (502, "upstream_error")
    assert "the upstream stream failed: the model crashed" in str(rejected)


def test_an_error_payload_naming_a_request_fault_mid_stream_is_a_refusal(
    fake: tuple[FakeOpenAI, str], gw: RunningGateway
) -> None:
    # as vLLM sends when the prompt plus max_tokens outgrow its context mid-way
    error = {"error": {"message": "maximum context length exceeded", "type": "BadRequestError",
                       "code": 400}}
    rejected, failures = fail_mid_stream(fake[0], gw, error)
    assert failures == 0  # the request's fault, not the cloud's
    assert (rejected.status, rejected.code) == (400, "invalid_request")
    assert "maximum context length exceeded" in str(rejected)


def test_an_error_payload_first_gets_its_own_status(
    fake: tuple[FakeOpenAI, str], gw: RunningGateway
) -> None:
    stream_with(fake[0], [{"error": {"message": "out of memory"}}], done=True)
    envelope, _ = sealed(gw, {**CHAT, "stream": True})
    assert post(gw, envelope).status_code == 502


def test_a_json_answer_to_a_stream_request_is_delivered_as_one_chunk(
    fake: tuple[FakeOpenAI, str], gw: RunningGateway
) -> None:
    completion = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "fake",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello there"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }

    async def handler(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        return web.json_response(completion)

    fake[0].generate = handler
    with device(gw) as client:
        stream = client.stream(CHAT)
        assert list(stream) == ["Hello there"]
    assert (stream.finish_reason, stream.model) == ("stop", "fake")
    assert stream.usage == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def test_a_stream_answered_with_another_content_type_is_an_upstream_error(
    fake: tuple[FakeOpenAI, str], gw: RunningGateway
) -> None:
    async def handler(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        return web.Response(text="<html>login</html>", content_type="text/html")

    fake[0].generate = handler
    envelope, key = sealed(gw, {**CHAT, "stream": True})
    resp = post(gw, envelope)
    assert resp.status_code == 502
    error = json.loads(open_response(key, resp.content))["error"]
    assert error["code"] == "upstream_error"
    assert "text/html, not text/event-stream" in error["message"]


def test_readiness_needs_a_2xx_from_the_upstream_models_route(
    fake: tuple[FakeOpenAI, str], gw: RunningGateway, start_gateway: GatewayFactory
) -> None:
    assert httpx.get(gw.url + "/readyz").json() == {"status": "ready"}
    # The upstream's root rather than its /v1: GET /models and every chat answer 404.
    root = start_gateway(upstream_url=fake[1].removesuffix("/v1"))
    not_ready = httpx.get(root.url + "/readyz")
    assert not_ready.status_code == 503
    assert not_ready.json()["reason"] == (
        "upstream answers 404 to GET /models (does upstream_url end in /v1?)"
    )
    fake[0].models = (418, "text/plain", "teapot")
    not_ready = httpx.get(gw.url + "/readyz")
    assert (not_ready.status_code, not_ready.json()["reason"]) == (
        503,
        "upstream answers 418 to GET /models",
    )


def test_a_runtime_cancelling_a_cloud_stream_the_upstream_stalls_ends_it_at_once(
    fake: tuple[FakeOpenAI, str], gw: RunningGateway, engine: Any
) -> None:
    import tempfile

    from runtime.config import RuntimeConfig, load_config
    from runtime.facade import Runtime

    fake[0].generate = fake[0].stall  # one token, then nothing for 60 s
    cfg = load_config(env={}).replace(
        runtime=RuntimeConfig(telemetry_path=tempfile.mkdtemp() + "/t.sqlite3"),
        offload=OffloadConfig(url=gw.url, credential=gw.home.credential, deadline_s=60.0))
    with Runtime(cfg, engine=engine) as rt:
        stream = rt.stream([{"role": "user", "content": "Say hi."}], mode="cloud-only")
        # the cancel waited for the gateway's next chunk: up to the 60 s deadline
        seen = stop_after_first(stream, stream.cancel, first_wait_s=30, end_wait_s=15)
        assert seen.got_first and seen.ended
        assert seen.items == ["Hi"]
        assert stream.result is not None
        assert (stream.result.source, stream.result.finish_reason) == ("cloud", "cancelled")
        assert rt.cloud is not None and rt.cloud.client.breaker.failures == 0


def _metric(url: str, line: str) -> bool:
    """Whether the gateway's /metrics shows `line`, within a generous wait."""
    for _ in range(600):
        if line in httpx.get(url + "/metrics").text.splitlines():
            return True
        time.sleep(0.05)
    return False


def _tokens_charged(home: GatewayHome) -> int:
    """Tokens charged to "phone" today (or yesterday, for a test that spans midnight), as
    the gateway's SQLite usage file holds them once it has shut down."""
    store = SqliteUsageStore(home.state_dir / "usage.sqlite3")
    today = int(time.time() // DAY)
    try:
        return sum(store.totals("phone", day)[1] for day in (today - 1, today))
    finally:
        asyncio.run(store.close())


def test_a_device_leaving_while_the_upstream_stalls_mid_stream_closes_the_upstream_request(
    fake: tuple[FakeOpenAI, str], gw: RunningGateway
) -> None:
    fake[0].generate = fake[0].stall  # one chunk, then silence for 60 s (the timeout is 120 s)
    with gateway_log() as records:
        hang_up_after_first_chunk(gw, CHAT)  # while nothing comes after the first chunk
        # The gateway has nothing to write, so only its handler's cancellation can tell it.
        assert fake[0].disconnected.wait(30), "the upstream request was left running"
        served = served_records(records, polls=600)
    assert [(r.fields["outcome"], r.fields["status"]) for r in served] == [  # type: ignore[attr-defined]
        ("client_disconnected", 200)
    ]
    assert _metric(gw.url, 'tandem_gateway_requests_total{outcome="client_disconnected"} 1.0')
    gw.server.stop()
    assert _tokens_charged(gw.home) == 2  # no usage came: "hi" (1 token) + the one chunk


def _post_then_hang_up(url: str, envelope: bytes, until: threading.Event) -> None:
    """POST `envelope` as a device would, then close the connection once `until` is set
    (without reading anything)."""
    port = urlsplit(url).port
    assert port is not None
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/sealed/chat/completions HTTP/1.1\r\nHost: gateway\r\n"
            + f"Content-Type: {REQUEST_CONTENT_TYPE}\r\n".encode()
            + f"Content-Length: {len(envelope)}\r\n\r\n".encode()
            + envelope
        )
        assert until.wait(30), "the request did not reach the upstream"


def test_a_device_leaving_a_served_gateway_while_the_upstream_thinks_closes_the_upstream_request(
    fake: tuple[FakeOpenAI, str], gateway_home: GatewayHome
) -> None:
    # The gateway as `tandem gateway serve` runs it (its own process), a non-streamed request,
    # and an upstream that sends nothing at all until the gateway lets go.
    fake[0].generate = fake[0].hold
    proc, url = spawn_gateway(gateway_home.state_dir, fake[1])
    try:
        gw = RunningGateway(url, None, gateway_home, None)  # type: ignore[arg-type]
        _post_then_hang_up(url, sealed(gw)[0], fake[0].generating)
        assert fake[0].disconnected.wait(30), "the upstream request was left running"
        assert _metric(url, 'tandem_gateway_requests_total{outcome="client_disconnected"} 1.0')
    finally:
        proc.terminate()  # a clean shutdown: usage is flushed
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()
    assert _tokens_charged(gateway_home) == 1  # the prompt's estimate: "hi" is 1 token


class _EngineThatThinks:
    """An embedded engine whose first answer never comes unless it is cancelled (60 s);
    later ones come at once. It counts the decodes that ran at the same time."""

    info = ModelInfo("thinker", "", "scripted", 2048, chat=True, has_logprobs=False)

    def __init__(self) -> None:
        self.started = threading.Event()  # the first decode began
        self.cancelled = threading.Event()  # and was told to stop
        self._lock = threading.Lock()
        self._calls = self._active = 0
        self.most_at_once = 0

    def render(self, prompt: Prompt) -> str:
        return str(prompt)

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def stream(
        self, prompt: Prompt, params: GenerationParams, cancel: threading.Event | None = None
    ) -> TokenStream:
        with self._lock:
            self._calls += 1
            first = self._calls == 1
            self._active += 1
            self.most_at_once = max(self.most_at_once, self._active)
        stop = cancel if cancel is not None else threading.Event()

        def events() -> Iterator[TokenEvent]:
            try:
                if first:
                    self.started.set()
                    if stop.wait(60):
                        self.cancelled.set()
                        tokens.finish("cancelled", Usage(1, 0))
                        return
                yield TokenEvent("Hi", 1, float("nan"), float("nan"))
                tokens.finish("stop", Usage(1, 1))
            finally:
                with self._lock:
                    self._active -= 1

        tokens = TokenStream(events(), stop)
        return tokens

    def close(self) -> None:
        pass


def test_a_device_leaving_while_the_embedded_engine_decodes_stops_it_and_frees_it(
    start_gateway: GatewayFactory,
) -> None:
    engine = _EngineThatThinks()
    gw = start_gateway(upstream_url="", engine=engine)  # type: ignore[arg-type]
    _post_then_hang_up(gw.url, sealed(gw)[0], engine.started)
    assert engine.cancelled.wait(30), "the engine went on decoding for nobody"
    envelope, key = sealed(gw)
    resp = post(gw, envelope)  # waits for the engine: the first decode has let go of it
    assert resp.status_code == 200
    assert json.loads(open_response(key, resp.content))["choices"][0]["message"]["content"] == "Hi"
    assert engine.most_at_once == 1
    assert _metric(gw.url, 'tandem_gateway_requests_total{outcome="client_disconnected"} 1.0')
