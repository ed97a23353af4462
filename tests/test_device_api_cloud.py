"""The device HTTP API with a real gateway on loopback: which route a request takes, and
how errors before the first text reach the client (status codes, not a 200 + error chunk).
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from cloud_gateway.fixed_upstream import ANSWER
from kernels import Engine
from tests.conftest_gateway import GatewayFactory, RunningGateway
from tests.device_server import serve_in_thread
from tests.test_runtime_cloud import make_runtime

STORY = [{"role": "user", "content": "Write a long story about a dragon and a knight."}]


def _sse_events(raw: str) -> list[dict[str, Any]]:
    return [json.loads(e[6:]) for e in raw.split("\n\n") if e.startswith("data: {")]


def test_a_non_streamed_answer_is_judged_whole_with_early_escalation(
        engine: Engine, gateway: RunningGateway) -> None:
    # Threshold 1.0: every local answer escalates; the early rule (checkpoint 4, margin 0)
    # fires at once, which only the whole-answer cascade runs. A streamed request decides
    # on its first 16 tokens instead.
    with make_runtime(engine, gateway.url, gateway.home.credential, threshold=1.0,
                      early=((4,), (0.0,))) as rt, serve_in_thread(rt) as url:
        body = {"model": "tandem", "messages": STORY, "max_tokens": 200}
        plain = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)
        streamed = httpx.post(f"{url}/v1/chat/completions", json={**body, "stream": True},
                              timeout=120)
    assert plain.status_code == 200, plain.text
    answer = plain.json()
    assert answer["choices"][0]["message"]["content"] == ANSWER
    tandem = answer["tandem"]
    assert tandem["source"] == "cloud"
    assert "margin 0.00 at checkpoint 4 (early escalation), escalated to the cloud" \
        in tandem["reason"]
    assert tandem["confidence"]["tokens"] < 200  # decoding stopped early
    final = _sse_events(streamed.text)[-1]
    assert final["tandem"]["source"] == "cloud"
    assert "over the first 16 tokens < threshold 1.00" in final["tandem"]["reason"]


def _both_ways(url: str, body: dict[str, Any]) -> tuple[httpx.Response, httpx.Response]:
    """The same request unstreamed and streamed (streamed first: the failure opens the
    circuit breaker, after which a request is refused or kept local when it is planned)."""
    streamed = httpx.post(f"{url}/v1/chat/completions", json={**body, "stream": True},
                          timeout=120)
    plain = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)
    return plain, streamed


def test_a_streamed_cloud_only_request_the_cloud_fails_is_a_503(
        engine: Engine, gateway: RunningGateway) -> None:
    # the gateway is up (so the request is planned to the cloud), its upstream fails
    with make_runtime(engine, gateway.url, gateway.home.credential, upstream_model="fail",
                      retries=0) as rt, serve_in_thread(rt) as url:
        body = {"model": "tandem", "messages": STORY, "max_tokens": 8,
                "tandem": {"mode": "cloud-only"}}
        plain, streamed = _both_ways(url, body)
    assert plain.status_code == 503
    # streamed too: the cloud call fails before any text, so before the 200
    assert streamed.status_code == 503, streamed.text
    assert streamed.headers["content-type"].startswith("application/json")
    error = streamed.json()["error"]
    assert (error["code"], error["type"]) == ("cloud_unavailable", "service_unavailable")
    assert error == plain.json()["error"] | {"message": error["message"]}


def test_a_streamed_prompt_too_long_for_the_local_fallback_is_a_400(
        engine: Engine, gateway: RunningGateway) -> None:
    # prefer-cloud: the cloud fails ("fail" upstream), the device takes over and the prompt
    # does not fit its 1024-token context; all before any text
    long = [{"role": "user", "content": "hello " * 1100}]
    with make_runtime(engine, gateway.url, gateway.home.credential, upstream_model="fail",
                      retries=0) as rt, serve_in_thread(rt) as url:
        body = {"model": "tandem", "messages": long, "max_tokens": 8,
                "tandem": {"mode": "prefer-cloud"}}
        plain, streamed = _both_ways(url, body)
    assert plain.status_code == 400, plain.text
    assert streamed.status_code == 400, streamed.text
    error = streamed.json()["error"]
    assert (error["code"], error["type"], error["param"]) == (
        "context_length_exceeded", "invalid_request_error", "messages")
    assert error == plain.json()["error"]


def test_an_error_after_text_is_a_chunk_shaped_like_the_error_body(
        engine: Engine, start_gateway: GatewayFactory) -> None:
    gw = start_gateway()
    with make_runtime(engine, gw.url, gw.home.credential, upstream_model="slow",
                      deadline_s=10) as rt, serve_in_thread(rt) as url:
        body = {"model": "tandem", "messages": STORY, "max_tokens": 8, "stream": True,
                "tandem": {"mode": "cloud-only"}}
        events: list[dict[str, Any]] = []
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body,
                          timeout=120) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    events.append(json.loads(line[6:]))
                    if len(events) == 2:  # the role chunk, then the first text
                        gw.server.stop()  # cloud-only: no device to take over
    assert ANSWER.startswith(events[1]["choices"][0]["delta"]["content"])
    error = events[-1]["error"]
    # what the same failure before any text gets as its 503 body
    assert (error["type"], error["param"], error["code"]) == (
        "service_unavailable", None, "cloud_unavailable")
