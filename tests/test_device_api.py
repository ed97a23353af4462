"""The device HTTP API, driven by the official `openai` client and raw HTTP."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import httpx
import openai
import pytest

from kernels import Engine
from runtime.config import RuntimeConfig, ServerConfig, load_config
from runtime.facade import Runtime
from runtime.result import Result
from tests.device_server import serve_in_thread

HELLO = [{"role": "user", "content": "Say hello."}]
# An answer that cannot end on its own while a test disconnects mid-stream (text is written
# every server.stream_interval_ms, so a short greeting may be complete before it notices).
STORY = [{"role": "user", "content": "Write a long story about a dragon and a knight."}]


def _runtime(engine: Engine, queue_size: int = 4, max_body: int = 1_048_576) -> Runtime:
    cfg = load_config(env={})
    cfg = cfg.replace(
        runtime=RuntimeConfig(queue_size=queue_size),
        server=ServerConfig(max_body_bytes=max_body, model_name="tandem"),
    )
    return Runtime(cfg, engine=engine)


@pytest.fixture()
def runtime(engine: Engine) -> Iterator[Runtime]:
    rt = _runtime(engine)
    yield rt
    rt.monitor.close()


@pytest.fixture()
def base_url(runtime: Runtime) -> Iterator[str]:
    with serve_in_thread(runtime) as url:
        yield url


@pytest.fixture()
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)


def test_plain_completion_through_the_openai_client(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(model="tandem", messages=HELLO, max_tokens=12)  # type: ignore[arg-type]
    choice = resp.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert resp.usage is not None and 0 < resp.usage.completion_tokens <= 12
    tandem = (resp.model_extra or {})["tandem"]
    assert tandem["source"] == "local"
    assert "prefer-local" in tandem["reason"]
    assert 0.0 <= tandem["confidence"]["score"] <= 1.0
    assert tandem["timings"]["ttft_ms"] > 0
    assert tandem["resources"]["memory"]["total_bytes"] > 0


def test_streaming_matches_the_plain_answer(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(model="tandem", messages=HELLO, max_tokens=16)  # type: ignore[arg-type]
    chunks = list(
        client.chat.completions.create(
            model="tandem", messages=HELLO, max_tokens=16, stream=True  # type: ignore[arg-type]
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    final = chunks[-1]
    assert final.choices[0].finish_reason == plain.choices[0].finish_reason
    extra = final.model_extra or {}
    assert extra["tandem"]["source"] == "local"
    assert final.usage is not None and plain.usage is not None
    assert final.usage.completion_tokens == plain.usage.completion_tokens


def test_sse_is_framed_as_openai_does(base_url: str) -> None:
    body = {"model": "tandem", "messages": HELLO, "max_tokens": 4, "stream": True}
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    first = json.loads(events[0][6:])
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}


def test_models_health_and_device_status(client: openai.OpenAI, base_url: str) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == ["tandem", "bundled:smollm2-135m"]
    assert httpx.get(f"{base_url}/healthz").json() == {"status": "ok"}
    status = httpx.get(f"{base_url}/v1/device/status").json()
    assert status["cpu"]["count"] >= 1
    assert status["battery"] is None  # this machine has no battery


def test_pushed_signals_show_in_the_status(base_url: str) -> None:
    r = httpx.post(
        f"{base_url}/v1/device/signals",
        json={"battery_percent": 17.0, "plugged_in": False, "temperature_c": 71.5},
    )
    assert r.status_code == 200, r.text
    status = httpx.get(f"{base_url}/v1/device/status").json()
    assert status["battery"]["percent"] == 17.0
    assert status["battery"]["plugged_in"] is False
    assert status["battery"]["source"] == "pushed"
    assert status["thermal"]["hottest_c"] == 71.5


def test_a_push_answers_from_the_cached_snapshot_without_probing_again(
    runtime: Runtime, base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monitor = runtime.monitor
    monkeypatch.setattr(monitor, "_cache_interval_s", 3600.0)  # no expiry during the test
    httpx.get(f"{base_url}/v1/device/status")  # the cache holds a probed snapshot now
    probes: list[float] = []
    real_probe = monitor._probe

    def counted() -> object:
        probes.append(0.0)
        return real_probe()

    monkeypatch.setattr(monitor, "_probe", counted)
    for percent in (40.0, 12.0):
        r = httpx.post(f"{base_url}/v1/device/signals",
                       json={"battery_percent": percent, "plugged_in": False})
        assert r.status_code == 200, r.text
        assert r.json()["snapshot"]["battery"]["percent"] == percent
        assert r.json()["snapshot"]["battery"]["source"] == "pushed"
    # No hardware probe ran for either push (vcgencmd takes up to 0.5 s on a Pi, and it used
    # to run on the server's event loop, stalling every stream).
    assert probes == []


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_json"),
        (json.dumps({"model": "gpt-9", "messages": HELLO}).encode(), 404, "model_not_found"),
        (json.dumps({"model": "tandem", "messages": []}).encode(), 400, "invalid_value"),
        (json.dumps({"model": "tandem", "messages": [{"role": "robot", "content": "x"}]}).encode(),
         400, "invalid_value"),
        (json.dumps({"model": "tandem", "messages": HELLO, "max_tokens": 0}).encode(),
         400, "invalid_value"),
        (json.dumps({"model": "tandem", "messages": HELLO, "temperature": "hot"}).encode(),
         400, "invalid_value"),
        (json.dumps({"model": "tandem", "messages": HELLO, "tandem": {"mode": "warp"}}).encode(),
         400, "mode_unavailable"),
        (json.dumps({"model": "tandem", "messages": HELLO,
                     "tandem": {"mode": "cloud-only"}}).encode(), 400, "mode_unavailable"),
        (json.dumps({"model": "tandem", "messages": [
            {"role": "user", "content": "word " * 3000}]}).encode(),
         400, "context_length_exceeded"),
    ],
)
def test_bad_requests_get_openai_error_bodies_and_the_server_keeps_serving(
    base_url: str, client: openai.OpenAI, payload: bytes, status: int, code: str
) -> None:
    r = httpx.post(f"{base_url}/v1/chat/completions", content=payload,
                   headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code
    assert err["message"]
    ok = client.chat.completions.create(model="tandem", messages=HELLO, max_tokens=2)  # type: ignore[arg-type]
    assert ok.choices[0].message.content is not None


@pytest.mark.parametrize(("field", "value"), [
    ("n", 2), ("n", True), ("top_logprobs", 3),
    ("tools", [{"type": "function", "function": {"name": "f"}}]),
    ("tool_choice", "required"), ("functions", [{"name": "f"}]),
    ("response_format", {"type": "json_object"}), ("frequency_penalty", 0.5),
    ("presence_penalty", -1), ("logit_bias", {"42": 5}),
])
def test_openai_fields_asking_for_what_is_not_provided_are_refused(
    base_url: str, field: str, value: object
) -> None:
    r = httpx.post(f"{base_url}/v1/chat/completions",
                   json={"messages": HELLO, "max_tokens": 2, field: value}, timeout=60)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["code"], err["param"], err["type"]) == (
        "unsupported_value", field, "invalid_request_error")
    assert field in err["message"]


def test_openai_fields_at_their_defaults_and_text_content_parts_are_accepted(
    client: openai.OpenAI,
) -> None:
    plain = client.chat.completions.create(
        model="tandem", max_tokens=6,
        messages=[{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": "Say\nhello"}],
    )
    parts = client.chat.completions.create(
        model="tandem", max_tokens=6, n=1, logprobs=False, tools=[], frequency_penalty=0,
        presence_penalty=0, response_format={"type": "text"},
        messages=[{"role": "developer", "content": "Be brief."},
                  {"role": "user", "content": [{"type": "text", "text": "Say"},
                                               {"type": "text", "text": "hello"}]}],
    )
    assert parts.choices[0].message.content == plain.choices[0].message.content
    assert parts.usage is not None and plain.usage is not None
    assert parts.usage.prompt_tokens == plain.usage.prompt_tokens


def test_token_logprobs_of_a_local_answer_in_openai_shape(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model="tandem", messages=HELLO, max_tokens=8, logprobs=True,  # type: ignore[arg-type]
    )
    choice = resp.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content
    tokens = choice.logprobs.content
    assert "".join(t.token for t in tokens) == choice.message.content
    assert all(t.logprob <= 0.0 and t.bytes == list(t.token.encode()) for t in tokens)
    assert resp.usage is not None and len(tokens) == resp.usage.completion_tokens
    plain = client.chat.completions.create(model="tandem", messages=HELLO, max_tokens=8)  # type: ignore[arg-type]
    assert plain.choices[0].logprobs is None
    assert plain.choices[0].message.content == choice.message.content


@pytest.mark.parametrize("stop", [None, [" the"], ["."]])
def test_streamed_token_logprobs_are_the_whole_answers(
    client: openai.OpenAI, stop: list[str] | None
) -> None:
    kwargs: dict[str, Any] = {"model": "tandem", "messages": STORY, "max_tokens": 40,
                              "logprobs": True, "stop": stop}
    whole = client.chat.completions.create(**kwargs)
    chunks = [c for c in client.chat.completions.create(**kwargs, stream=True) if c.choices]
    expected = whole.choices[0].logprobs
    assert expected is not None and expected.content
    if stop:  # the stop string matched: its tokens' text never came
        assert whole.choices[0].finish_reason == "stop"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == whole.choices[0].message.content
    streamed = [t for c in chunks if c.choices[0].logprobs is not None
                for t in c.choices[0].logprobs.content or []]
    assert [(t.token, t.logprob) for t in streamed] == [
        (t.token, t.logprob) for t in expected.content]
    for c in chunks[:-1]:  # each text chunk lists the tokens its text completes
        if c.choices[0].delta.content and c.choices[0].logprobs is not None:
            assert "".join(t.token for t in c.choices[0].logprobs.content or []) == (
                c.choices[0].delta.content)
    plain = client.chat.completions.create(**{**kwargs, "logprobs": False}, stream=True)
    assert all(c.choices[0].logprobs is None for c in plain if c.choices)


@pytest.mark.parametrize(("content", "message"), [
    ([{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}],
     "part 0 is 'image_url': only text parts are supported"),
    ([], "a string or a non-empty list of text parts"),
    ([{"type": "text", "text": 3}], "part 0 must have a string text"),
    (["hi"], "part 0 must be an object with a type"),
])
def test_content_parts_other_than_text_are_400_naming_messages(
    base_url: str, content: object, message: str
) -> None:
    r = httpx.post(f"{base_url}/v1/chat/completions",
                   json={"messages": [{"role": "user", "content": content}]}, timeout=60)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["code"], err["param"]) == ("invalid_value", "messages")
    assert message in err["message"]


def test_a_message_name_must_be_a_string(client: openai.OpenAI, base_url: str) -> None:
    named = client.chat.completions.create(
        model="tandem", max_tokens=6,
        messages=[{"role": "user", "content": "Say hello.", "name": "ana"}],
    )
    assert named.choices[0].message.content  # accepted (OpenAI's participant name), unused
    r = httpx.post(f"{base_url}/v1/chat/completions", timeout=60,
                   json={"messages": [{"role": "user", "content": "hi", "name": 7}]})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == {"message": "messages[0]: message name must be a string, not int",
                                 "type": "invalid_request_error", "param": "messages",
                                 "code": "invalid_value"}


def test_oversized_body_is_413(engine: Engine) -> None:
    rt = _runtime(engine, max_body=2048)
    with serve_in_thread(rt) as url:
        big = {"model": "tandem", "messages": [{"role": "user", "content": "x" * 5000}]}
        r = httpx.post(f"{url}/v1/chat/completions", json=big)
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "body_too_large"
        assert httpx.get(f"{url}/healthz").status_code == 200


def test_openai_client_raises_its_own_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=HELLO)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tandem", messages=[])


def _send_story(base_url: str, max_tokens: int, stream: bool) -> socket.socket:
    """Send a chat request for STORY on a raw socket (a test may close it at any time)."""
    u = urlparse(base_url)
    sock = socket.create_connection((u.hostname, u.port), timeout=60)
    body = json.dumps({"model": "tandem", "messages": STORY, "max_tokens": max_tokens,
                       "stream": stream}).encode()
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    )
    return sock


def _open_stream(base_url: str, max_tokens: int) -> socket.socket:
    """Start a streaming request on a raw socket and read until the first token arrives."""
    sock = _send_story(base_url, max_tokens, stream=True)
    seen = b""
    while seen.count(b"data: ") < 3:  # the role chunk, then two content chunks
        data = sock.recv(4096)
        assert data, "server closed early"
        seen += data
    assert b" 200 " in seen.split(b"\r\n")[0]
    return sock


def _open_answer(base_url: str, runtime: Runtime, max_tokens: int) -> socket.socket:
    """Start a non-streamed request on a raw socket and wait until it is generating."""
    sock = _send_story(base_url, max_tokens, stream=False)
    deadline = time.monotonic() + 60
    while not runtime.queue_depth and time.monotonic() < deadline:
        time.sleep(0.01)
    assert runtime.queue_depth == 1, "the generation never started"
    return sock


@pytest.mark.parametrize("stream", [True, False])
def test_client_disconnect_cancels_generation_and_frees_the_engine(
    runtime: Runtime, base_url: str, client: openai.OpenAI, stream: bool
) -> None:
    results: list[Result] = []
    done = threading.Event()

    def listen(result: Result) -> None:
        results.append(result)
        done.set()

    runtime.listeners.append(listen)
    sock = (_open_stream(base_url, max_tokens=1000) if stream
            else _open_answer(base_url, runtime, max_tokens=1000))
    # Not streamed, the handler used to go on waiting for the whole answer: aiohttp cancels
    # it on a disconnect only when served with handler_cancellation.
    sock.close()
    assert done.wait(60), "the abandoned generation never finished"
    assert results[0].finish_reason == "cancelled"
    assert results[0].usage.completion_tokens < 1000
    deadline = time.monotonic() + 30
    while runtime.queue_depth and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runtime.queue_depth == 0
    ok = client.chat.completions.create(model="tandem", messages=HELLO, max_tokens=3)  # type: ignore[arg-type]
    assert ok.usage is not None and ok.usage.completion_tokens <= 3


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/choose"])
def test_a_request_that_finds_no_worker_thread_is_429_at_once(engine: Engine, path: str) -> None:
    # The local queue has room (4), the worker threads do not: the second request must not
    # wait unseen behind the first (cloud calls to a stalled gateway hold threads so).
    cfg = load_config(env={})
    cfg = cfg.replace(runtime=RuntimeConfig(queue_size=4),
                      server=ServerConfig(model_name="tandem", worker_threads=1))
    rt = Runtime(cfg, engine=engine)
    body = ({"model": "tandem", "messages": HELLO, "max_tokens": 2} if path.endswith("ions")
            else {"question": "2 + 2?", "options": ["4", "5"]})
    try:
        with serve_in_thread(rt) as url:
            sock = _open_stream(url, max_tokens=1000)
            try:
                r = httpx.post(f"{url}{path}", json=body, timeout=5)
                assert r.status_code == 429, r.text
                assert r.headers["Retry-After"] == "1"
                err = r.json()["error"]
                assert err["code"] == "queue_full"
                assert "all 1 worker threads are taken" in err["message"]
                assert rt.queue_depth == 1  # the refused request never reached the queue
            finally:
                sock.close()
            deadline = time.monotonic() + 30
            while rt.queue_depth and time.monotonic() < deadline:
                time.sleep(0.05)
            ok = httpx.post(f"{url}/v1/chat/completions", timeout=60,
                            json={"model": "tandem", "messages": HELLO, "max_tokens": 2})
            assert ok.status_code == 200, ok.text  # the thread is free again
    finally:
        rt.monitor.close()


def test_full_queue_answers_429_with_retry_after(engine: Engine) -> None:
    rt = _runtime(engine, queue_size=0)  # one running, none waiting
    with serve_in_thread(rt) as url:
        sock = _open_stream(url, max_tokens=1000)
        try:
            r = httpx.post(f"{url}/v1/chat/completions",
                           json={"model": "tandem", "messages": HELLO, "max_tokens": 2})
            assert r.status_code == 429
            assert r.headers["Retry-After"] == "1"
            assert r.json()["error"]["code"] == "queue_full"
        finally:
            sock.close()


def _wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert condition(), what


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_leaves_the_queue_gives_up_its_place_at_once(
    engine: Engine, stream: bool
) -> None:
    rt = _runtime(engine, queue_size=1)  # one running, one waiting
    results: list[Result] = []
    rt.listeners.append(results.append)
    try:
        with serve_in_thread(rt) as url:
            running = _open_stream(url, max_tokens=1000)  # holds the engine meanwhile
            try:
                waiting = _send_story(url, max_tokens=50, stream=stream)
                _wait_for(lambda: rt.queue_depth == 2, "the second request never queued")
                waiting.close()  # it leaves before it got the engine
                # (the place is given back just before the answer is finished and reported)
                _wait_for(lambda: rt.queue_depth < 2 and results,
                          "the queue place was never freed")
                # freed while the first answer still runs (only the leaver has finished),
                # not when it ends
                assert [(r.finish_reason, r.usage.completion_tokens) for r in results] \
                    == [("cancelled", 0)]
                # a newcomer is queued in the freed place, not refused with 429
                newcomer = _send_story(url, max_tokens=2, stream=True)
                _wait_for(lambda: rt.queue_depth == 2, "the newcomer was not admitted")
                newcomer.close()
            finally:
                running.close()
            _wait_for(lambda: rt.queue_depth == 0, "the engine was never freed")
    finally:
        rt.close()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"battery_percent": 140}, "battery_percent must be between 0 and 100"),
        ({"battery": 50}, "unknown signal(s) battery"),
        ({"plugged_in": "yes"}, "plugged_in"),
    ],
)
def test_bad_signals_are_400(base_url: str, payload: dict[str, object], message: str) -> None:
    r = httpx.post(f"{base_url}/v1/device/signals", json=payload)
    assert r.status_code == 400
    assert message in r.json()["error"]["message"]


@pytest.mark.parametrize("model", [["tandem"], {}, 7])
def test_a_model_that_is_not_a_string_is_400_naming_model(base_url: str, model: object) -> None:
    r = httpx.post(f"{base_url}/v1/chat/completions", json={"model": model, "messages": HELLO})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == {"message": "model must be a string (a model id)",
                                 "type": "invalid_request_error", "param": "model",
                                 "code": "invalid_value"}


def test_an_unforeseen_failure_is_a_logged_json_500_and_the_server_keeps_serving(
    runtime: Runtime, base_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert runtime.telemetry is not None
    runtime.telemetry.close()  # the database fails under the request: nothing maps that error
    r = httpx.post(f"{base_url}/v1/feedback", json={"id": "chatcmpl-x", "good": True})
    assert r.status_code == 500
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"] == {"message": "internal server error (see the server log)",
                                 "type": "server_error", "param": None,
                                 "code": "internal_error"}
    assert "unexpected error while serving a request" in caplog.text
    assert httpx.get(f"{base_url}/healthz").json() == {"status": "ok"}


@pytest.mark.parametrize("stream", ["false", 0, 1, [], {}])
def test_stream_must_be_a_json_boolean(base_url: str, stream: object) -> None:
    r = httpx.post(f"{base_url}/v1/chat/completions",
                   json={"model": "tandem", "messages": HELLO, "max_tokens": 2, "stream": stream})
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert (err["code"], err["param"]) == ("invalid_value", "stream")
    assert err["message"] == f"stream must be true or false, not {stream!r}"


def test_stream_null_is_a_plain_answer(base_url: str) -> None:
    r = httpx.post(f"{base_url}/v1/chat/completions",
                   json={"model": "tandem", "messages": HELLO, "max_tokens": 2, "stream": None},
                   timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "chat.completion"


@pytest.mark.parametrize(("field", "literal"), [
    ("temperature", "NaN"), ("temperature", "Infinity"), ("top_p", "-Infinity"),
    ("temperature", "1e999"),
])
def test_nan_and_infinity_are_not_json_numbers(base_url: str, field: str, literal: str) -> None:
    raw = ('{"model": "tandem", "messages": [{"role": "user", "content": "hi"}], '
           f'"max_tokens": 2, "{field}": {literal}}}')
    r = httpx.post(f"{base_url}/v1/chat/completions", content=raw,
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_json"
    assert err["message"] == f"request body is not valid JSON: {literal} is not a finite number"


@pytest.mark.parametrize(("fields", "param"), [
    ({"max_completion_tokens": 0, "max_tokens": 2}, "max_completion_tokens"),
    ({"max_completion_tokens": -3}, "max_completion_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
])
def test_a_token_limit_below_one_is_400_naming_the_field(
    base_url: str, fields: dict[str, int], param: str
) -> None:
    r = httpx.post(f"{base_url}/v1/chat/completions",
                   json={"model": "tandem", "messages": HELLO, **fields})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["code"], err["param"]) == ("invalid_value", param)
    assert err["message"] == f"{param} must be at least 1, not {fields[param]}"


def test_max_completion_tokens_wins_over_max_tokens(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(model="tandem", messages=STORY, max_tokens=40,  # type: ignore[arg-type]
                                          max_completion_tokens=3)
    assert resp.usage is not None and resp.usage.completion_tokens == 3


@pytest.mark.parametrize("stop", ["", ["\n", ""]])
def test_an_empty_stop_string_is_400(base_url: str, stop: object) -> None:
    r = httpx.post(f"{base_url}/v1/chat/completions",
                   json={"model": "tandem", "messages": HELLO, "max_tokens": 8, "stop": stop})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == {"message": "stop strings must not be empty",
                                 "type": "invalid_request_error", "param": "stop",
                                 "code": "invalid_value"}


@pytest.mark.parametrize(("body", "param", "message"), [
    # JSON's escape of half a UTF-16 pair, and the same as raw bytes: both used to reach the
    # tokenizer and come back as Python's own "'utf-8' codec can't encode ..." message.
    ('{"messages": [{"role": "user", "content": "hi \\ud800"}]}', "messages",
     "messages[0]: message content is not valid Unicode text: a lone surrogate U+D800 at "
     "character 3"),
    (b'{"messages": [{"role": "user", "content": "hi \xed\xb0\x80"}]}', "messages",
     "messages[0]: message content is not valid Unicode text: a lone surrogate U+DC00 at "
     "character 3"),
    ('{"messages": [{"role": "user", "content": "hi"}], "stop": ["a", "\\udfff"]}', "stop",
     "stop string is not valid Unicode text: a lone surrogate U+DFFF at character 0"),
])
def test_a_lone_surrogate_is_a_400_naming_where(
    base_url: str, body: str | bytes, param: str, message: str
) -> None:
    r = httpx.post(f"{base_url}/v1/chat/completions", content=body,
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == {"message": message, "type": "invalid_request_error",
                                 "param": param, "code": "invalid_value"}


CLOUD_ONLY = {"X-Tandem-Mode": "cloud-only"}


@pytest.mark.parametrize(("path", "body", "headers", "param"), [
    ("/v1/chat/completions", {"messages": HELLO, "tandem": {"mode": "cloud-only"}}, {},
     "tandem.mode"),
    ("/v1/chat/completions", {"messages": HELLO}, CLOUD_ONLY, "X-Tandem-Mode"),
    ("/v1/chat/completions", {"messages": HELLO, "stream": True}, CLOUD_ONLY, "X-Tandem-Mode"),
    ("/v1/choose", {"question": "2 + 2?", "options": ["4", "5"], "mode": "cloud-only"}, {},
     "mode"),
    ("/v1/choose", {"question": "2 + 2?", "options": ["4", "5"]}, CLOUD_ONLY, "X-Tandem-Mode"),
])
def test_an_unavailable_mode_names_where_the_request_set_it(
    base_url: str, path: str, body: dict[str, object], headers: dict[str, str], param: str
) -> None:
    r = httpx.post(f"{base_url}{path}", json=body, headers=headers, timeout=60)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["code"], err["param"]) == ("mode_unavailable", param)


def test_a_served_model_can_be_retrieved_by_id(client: openai.OpenAI, base_url: str) -> None:
    assert client.models.retrieve("tandem").id == "tandem"
    assert client.models.retrieve("bundled:smollm2-135m").owned_by == "tandem"
    r = httpx.get(f"{base_url}/v1/models/gpt-9")
    assert r.status_code == 404
    err = r.json()["error"]
    assert (err["code"], err["param"]) == ("model_not_found", "model")
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-9")


def test_a_null_signal_is_not_reported_as_accepted(base_url: str) -> None:
    r = httpx.post(f"{base_url}/v1/device/signals",
                   json={"battery_percent": None, "temperature_c": 40.0})
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == ["temperature_c"]
    assert r.json()["snapshot"]["battery"] is None  # nothing stored for the null


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/chat/completions", {"messages": HELLO, "temperature": -1}, "temperature"),
    ("/v1/chat/completions", {"messages": HELLO, "top_p": 2}, "top_p"),
    ("/v1/chat/completions", {"messages": [1]}, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}, "messages"),
    ("/v1/choose", {"question": "2 + 2?", "options": ["4"]}, "options"),
    ("/v1/choose", {"question": "2 + 2?", "options": ["4", " "]}, "options"),
    ("/v1/choose", {"question": " ", "options": ["4", "5"]}, "question"),
    ("/v1/choose", {"question": "Which?", "options": ["Four", "four "]}, "options"),
])
def test_a_bad_value_names_its_field_in_param(
    base_url: str, path: str, body: dict[str, object], param: str
) -> None:
    r = httpx.post(f"{base_url}{path}", json=body, timeout=60)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["code"], err["param"]) == ("invalid_value", param), err


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/feedback", '{"id": "chatcmpl-x\\ud800", "good": true}', "id"),
    ("/v1/feedback", '{"id": "chatcmpl-x", "good": true, "note": "ok \\udc00"}', "note"),
    ("/v1/choose", '{"question": "Q\\ud800?", "options": ["a", "b"]}', "question"),
    ("/v1/choose", '{"question": "Q?", "options": ["a", "b\\ud800"]}', "options"),
])
def test_text_that_is_not_unicode_names_its_field_on_every_endpoint(
    base_url: str, path: str, body: str, param: str
) -> None:
    r = httpx.post(f"{base_url}{path}", content=body,
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["code"], err["param"]) == ("invalid_value", param), err
    assert "is not valid Unicode text: a lone surrogate" in err["message"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/feedback", "/v1/device/signals"])
def test_json_nested_too_deeply_is_400_not_500(base_url: str, path: str) -> None:
    r = httpx.post(f"{base_url}{path}", content="[" * 100_000 + "]" * 100_000,
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_json"


def test_a_signal_too_large_for_a_float_is_400_naming_it(base_url: str) -> None:
    r = httpx.post(f"{base_url}/v1/device/signals", content='{"seconds_left": 1' + "0" * 330 + "}",
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["code"], err["param"]) == ("invalid_value", "seconds_left")
    assert err["message"].startswith("seconds_left must be a finite number, not 1000")
    assert len(err["message"]) < 100  # the number is not echoed whole


def test_top_p_zero_is_greedy(client: openai.OpenAI) -> None:
    def answer(**kw: float) -> str:
        r = client.chat.completions.create(
            model="tandem", messages=[{"role": "user", "content": "Name a colour."}],
            max_tokens=8, **kw)
        return r.choices[0].message.content or ""

    assert answer(top_p=0, temperature=1.0, seed=5) == answer(temperature=0)
