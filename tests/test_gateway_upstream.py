"""How the gateway reports its upstream's failures, seen by a real device client.

A real gateway on a loopback port in front of the scriptable fake OpenAI server
(`tests/fake_openai.py`), and the real `OffloadClient` where what the device concludes (a
refusal, or a cloud failure counted by its circuit breaker) is the point.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiohttp import web

from cloud_gateway.protocol import open_response
from runtime.offload import OffloadClient, OffloadConfig
from runtime.offload_errors import GatewayRejected
from tests.conftest_gateway import GatewayFactory, RunningGateway
from tests.fake_openai import FakeOpenAI, chat_chunk, fake_openai, stop_after_first
from tests.test_gateway import CHAT, post, sealed

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
