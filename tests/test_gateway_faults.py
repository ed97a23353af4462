"""Gateway faults found by fault hunting, one test (or a few) per fault.

Real components, as in the other gateway tests: a gateway on a loopback port, the scriptable
fake OpenAI server (`tests/fake_openai.py`) or an upstream object with a bug as its upstream,
a real `redis-server` where Redis is the point. What a request was charged is read back from
the gateway's usage store (SQLite, or Redis), once the gateway has logged it as `served`
(charging comes before that line).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from aiohttp import web
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from cloud_gateway.app import STATE_KEY
from cloud_gateway.config import GatewayConfig, load_gateway_config
from cloud_gateway.errors import ConfigurationError, StaleTimestamp, StoreUnavailable
from cloud_gateway.limits import DAY
from cloud_gateway.protocol import FrameOpener
from cloud_gateway.protocol.frames import MAX_FRAME_BYTES
from cloud_gateway.replay import ReplayGuard
from cloud_gateway.replay_memory import MemoryNonceStore
from cloud_gateway.usage_redis import RedisUsageStore
from tests.conftest_gateway import GatewayFactory, GatewayHome, RunningGateway, free_port
from tests.fake_openai import FakeOpenAI, chat_chunk, fake_openai
from tests.test_gateway import (
    _BrokenUpstream,
    error_code,
    gateway_log,
    post,
    sealed,
    served_records,
)

# 4000 characters: a prompt estimate of 1000 tokens, what a failed request used to cost.
LONG_PROMPT = "z" * 4000
PROMPT_ESTIMATE = 1000


def chat(model: str = "fake", *, stream: bool = False, content: str = LONG_PROMPT
         ) -> dict[str, Any]:
    return {"model": model, "stream": stream, "max_tokens": 16,
            "messages": [{"role": "user", "content": content}]}


@pytest.fixture
def fake() -> Iterator[tuple[FakeOpenAI, str]]:
    with fake_openai() as running:
        yield running


def completion(content: str = "Hello there", usage: object = None) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "id": "chatcmpl-1", "object": "chat.completion", "model": "fake",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": "stop"}],
    }
    if usage is not None:
        answer["usage"] = usage
    return answer


def answer(fake: FakeOpenAI, *, json_body: dict[str, Any] | None = None,
           chunks: list[dict[str, Any] | str] | None = None, raw: bytes | None = None,
           status: int = 200, headers: dict[str, str] | None = None) -> None:
    """Make the fake upstream answer every chat request: `json_body` (with `status`) to a
    non-streamed one, `chunks` as SSE or `raw` SSE bytes to a streamed one."""

    async def handler(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        if status >= 400 or not body.get("stream"):
            return web.json_response(json_body, status=status, headers=headers)
        if raw is not None:
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await response.write(raw)
            await response.write_eof()
            return response
        return await fake.stream(request, chunks or [])

    fake.generate = handler


def tokens_today(gw: RunningGateway, device: str = "phone") -> int:
    """The tokens the gateway's SQLite usage store holds for the device today (read on the
    gateway's own event loop)."""
    store = gw.server._app[STATE_KEY].limiter.store

    async def read() -> int:
        return int(store.totals(device, int(time.time() // DAY))[1])

    return asyncio.run_coroutine_threadsafe(read(), gw.server._loop).result(timeout=30)


def served(send: Callable[[], httpx.Response], polls: int = 400) -> httpx.Response:
    """Send a request and wait until the gateway logged it as `served` (its charge is
    recorded by then, also for a stream, whose accounting ends after the last byte)."""
    with gateway_log() as records:
        resp = send()
        assert len(served_records(records, polls)) == 1, "no `served` line was logged"
    return resp


def charge_of(gw: RunningGateway, body: dict[str, Any]) -> tuple[httpx.Response, int]:
    """(the gateway's answer, the tokens it charged the device) for one request."""
    before = tokens_today(gw)
    resp = served(lambda: post(gw, sealed(gw, body)[0]))
    return resp, tokens_today(gw) - before


# --- 1. a request the upstream never served costs nothing -----------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize(
    ("upstream_status", "status", "code"),
    [(500, 502, "upstream_error"), (400, 400, "invalid_request"),
     (429, 429, "upstream_rate_limited")],
)
def test_an_upstream_error_before_any_output_is_not_charged(
    fake: tuple[FakeOpenAI, str], start_gateway: GatewayFactory, stream: bool,
    upstream_status: int, status: int, code: str,
) -> None:
    answer(fake[0], json_body={"error": {"message": "no"}}, status=upstream_status,
           headers={"Retry-After": "7"})
    gw = start_gateway(upstream_url=fake[1])
    resp, charged = charge_of(gw, chat(stream=stream))
    assert resp.status_code == status
    assert charged == 0
    # A served answer is still charged, with the upstream's usage.
    answer(fake[0], json_body=completion(usage={"prompt_tokens": 3, "completion_tokens": 2}),
           chunks=[chat_chunk("Hi", finish="stop"),
                   {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}])
    resp, charged = charge_of(gw, chat(stream=stream))
    assert (resp.status_code, charged) == (200, 5)


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_an_unreachable_upstream_does_not_use_up_the_daily_quota(
    start_gateway: GatewayFactory, stream: bool
) -> None:
    # Each try estimated 1000 tokens: the third used to be 429 for the rest of the day.
    gw = start_gateway(upstream_url=f"http://127.0.0.1:{free_port()}/v1", tokens_per_day=1500)
    answers = []
    for _ in range(4):
        resp, charged = charge_of(gw, chat(stream=stream))
        answers.append((resp.status_code, charged))
    assert answers == [(503, 0)] * 4
    assert tokens_today(gw) == 0


def test_a_stream_that_fails_after_output_is_still_charged(
    fake: tuple[FakeOpenAI, str], start_gateway: GatewayFactory
) -> None:
    # One chunk came, then the stream broke (no [DONE]): the estimate plus a token a chunk.
    async def cut(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        return await fake[0].stream(request, [chat_chunk("Hi")], done=False)

    fake[0].generate = cut
    gw = start_gateway(upstream_url=fake[1])
    resp, charged = charge_of(gw, chat(stream=True))
    assert resp.status_code == 200  # the error is in the trailer
    assert charged == PROMPT_ESTIMATE + 1


# --- 2. a restart of a gateway whose nonce store is in memory -------------------------------


def test_an_envelope_stamped_before_the_gateway_started_is_stale(
    start_gateway: GatewayFactory,
) -> None:
    stamped = int(time.time() * 1000) - 1000  # within the window, but before the start
    gw = start_gateway()
    resp = post(gw, sealed(gw, chat(), now_ms=stamped)[0])
    assert (resp.status_code, error_code(resp)) == (425, "stale_timestamp")
    assert "before the gateway started" in resp.json()["error"]["message"]
    # It says what time it is by the gateway's clock, for the device to reseal by.
    assert abs(resp.json()["error"]["gateway_time_ms"] - time.time() * 1000) < 5000
    # The device's retry, sealed afresh, is served.
    assert post(gw, sealed(gw, chat())[0]).status_code == 200


def test_an_envelope_accepted_before_a_restart_is_refused_after_it(
    start_gateway: GatewayFactory,
) -> None:
    first = start_gateway()
    envelope, _ = sealed(first, chat())
    assert post(first, envelope).status_code == 200
    first.server.stop()
    second = start_gateway()  # a new process' memory: it never saw the nonce
    resp = post(second, envelope)
    assert (resp.status_code, error_code(resp)) == (425, "stale_timestamp")


def test_the_start_rule_is_only_for_the_store_in_memory(
    start_gateway: GatewayFactory, redis_url: str
) -> None:
    # Redis keeps the nonces across a restart: an envelope from before it is judged by them.
    stamped = int(time.time() * 1000) - 1000
    gw = start_gateway(redis_url=redis_url)
    assert gw.server._app[STATE_KEY].admission.replay.not_before_ms == 0
    envelope, _ = sealed(gw, chat(), now_ms=stamped)
    assert post(gw, envelope).status_code == 200
    resp = post(gw, envelope)
    assert (resp.status_code, error_code(resp)) == (409, "replayed_nonce")


def test_the_replay_guard_refuses_timestamps_before_its_start() -> None:
    guard = ReplayGuard(MemoryNonceStore(), 60.0, not_before_ms=1_000_000_000)
    with pytest.raises(StaleTimestamp):
        guard.check_timestamp(999_999_999, now=1_000_010.0)
    guard.check_timestamp(1_000_000_000, now=1_000_010.0)  # from the start on: accepted
    with pytest.raises(StaleTimestamp):  # the window still applies
        guard.check_timestamp(1_000_000_000, now=1_000_061.0)


# --- 3. replicas with skewed clocks ----------------------------------------------------------


class _RecordingStore:
    def __init__(self) -> None:
        self.ttls: list[float] = []

    async def remember(self, key: bytes, ttl_s: float) -> bool:
        self.ttls.append(ttl_s)
        return True

    async def close(self) -> None:
        pass


def test_nonces_are_kept_three_clock_windows() -> None:
    # Accepted at the far edge of replica A's window (device clock +W ahead of A), an envelope
    # stays acceptable by timestamp for 2W at A, and for 2W + s at a replica whose clock lags
    # A's by s. With s < W, a nonce kept 3W is still there whenever any replica accepts it.
    store = _RecordingStore()
    guard = ReplayGuard(store, 10.0)
    asyncio.run(guard.check_nonce("phone", b"n" * 16))
    assert store.ttls == [30.0]
    window, skew = 10.0, 9.9
    accepted_until = 2 * window + skew  # after the first acceptance, at the lagging replica
    assert store.ttls[0] > accepted_until


# --- 4. usage figures the upstream should never report ---------------------------------------


def _usage_answers(fake: FakeOpenAI, usage: dict[str, Any]) -> None:
    answer(fake, json_body=completion(usage=usage),
           chunks=[chat_chunk("Hi", finish="stop"), {"choices": [], "usage": usage}])


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": -50, "completion_tokens": 2},
        {"prompt_tokens": 10**30, "completion_tokens": 2},
        {"prompt_tokens": 2**63, "completion_tokens": 0},
        {"prompt_tokens": True, "completion_tokens": 2},
    ],
    ids=["negative", "huge", "2^63", "bool"],
)
def test_usage_out_of_range_is_ignored_and_the_estimate_charged(
    fake: tuple[FakeOpenAI, str], start_gateway: GatewayFactory, stream: bool,
    usage: dict[str, Any],
) -> None:
    _usage_answers(fake[0], usage)
    gw = start_gateway(upstream_url=fake[1])
    body = chat(stream=stream)
    resp, charged = charge_of(gw, body)
    assert resp.status_code == 200
    # 1000 for the prompt, then "Hello there" (11 characters: 3 tokens) or a token for each
    # of the two streamed chunks (the answer's, the usage's)
    assert charged == PROMPT_ESTIMATE + (2 if stream else 3)
    metrics = httpx.get(gw.url + "/metrics").text
    assert 'tandem_gateway_requests_total{outcome="ok"} 1.0' in metrics
    assert 'tandem_gateway_tokens_total{kind="prompt"}' not in metrics


def test_an_absurd_usage_does_not_stop_sqlite_flushes_for_other_devices(
    fake: tuple[FakeOpenAI, str], start_gateway: GatewayFactory, gateway_home: GatewayHome
) -> None:
    import sqlite3

    tablet = gateway_home.enroll("tablet")
    gw = start_gateway(upstream_url=fake[1])
    _usage_answers(fake[0], {"prompt_tokens": 2**63, "completion_tokens": 2})
    assert post(gw, sealed(gw, chat(content="hi"))[0]).status_code == 200
    _usage_answers(fake[0], {"prompt_tokens": 3, "completion_tokens": 2})
    assert post(gw, sealed(gw, chat(content="hi"), credential=tablet)[0]).status_code == 200
    gw.server.stop()  # a clean shutdown writes the day's usage
    db = sqlite3.connect(gateway_home.state_dir / "usage.sqlite3")
    try:
        rows = dict(db.execute("SELECT device, tokens FROM usage").fetchall())
    finally:
        db.close()
    assert rows == {"phone": 1 + 3, "tablet": 5}  # phone: the estimate ("hi", "Hello there")


def test_a_redis_charge_that_fails_leaves_no_marker_and_is_added_when_sent_again(
    redis_url: str,
) -> None:
    prefix, day = "tandem-range:", 11
    counter = f"{prefix}tok:phone:{day}"
    with Redis.from_url(redis_url) as redis:
        redis.set(counter, 2**63 - 3)  # INCRBY 5 overflows: Redis refuses it

    async def send() -> None:
        client = AsyncRedis.from_url(redis_url)
        try:
            await RedisUsageStore(client, prefix=prefix).add_tokens(
                "phone", day, 5, charge_id="c-over", first_attempt=True)
        finally:
            await client.aclose()

    with pytest.raises(StoreUnavailable):
        asyncio.run(send())
    with Redis.from_url(redis_url) as redis:
        assert int(redis.get(counter) or 0) == 2**63 - 3
        assert redis.exists(f"{prefix}charge:c-over") == 0  # not taken for added
        redis.delete(counter)
    asyncio.run(send())  # sent again under its id: added, not dropped as a duplicate
    with Redis.from_url(redis_url) as redis:
        assert int(redis.get(counter) or 0) == 5
        assert redis.exists(f"{prefix}charge:c-over") == 1


def test_an_absurd_usage_is_not_sent_to_redis_and_charges_keep_flowing(
    fake: tuple[FakeOpenAI, str], start_gateway: GatewayFactory, gateway_home: GatewayHome,
    redis_url: str,
) -> None:
    tablet = gateway_home.enroll("tablet")
    gw = start_gateway(upstream_url=fake[1], redis_url=redis_url)
    day = int(time.time() // DAY)
    with Redis.from_url(redis_url) as redis:
        redis.delete(f"tandem:tok:phone:{day}", f"tandem:tok:tablet:{day}")
    _usage_answers(fake[0], {"prompt_tokens": 10**30, "completion_tokens": 2})
    assert post(gw, sealed(gw, chat(content="hi"))[0]).status_code == 200
    _usage_answers(fake[0], {"prompt_tokens": 3, "completion_tokens": 2})
    for _ in range(2):
        assert post(gw, sealed(gw, chat(content="hi"), credential=tablet)[0]).status_code == 200
    with Redis.from_url(redis_url) as redis:
        assert int(redis.get(f"tandem:tok:phone:{day}") or 0) == 1 + 3
        assert int(redis.get(f"tandem:tok:tablet:{day}") or 0) == 10
    metrics = httpx.get(gw.url + "/metrics").text
    assert "tandem_gateway_uncharged_tokens 0.0" in metrics


# --- 5. an upstream bug before the first chunk -----------------------------------------------


def test_a_stream_whose_upstream_fails_at_once_with_a_bug_is_counted_once_and_not_charged(
    start_gateway: GatewayFactory,
) -> None:
    gw = start_gateway(upstream=_BrokenUpstream())
    with gateway_log() as records:
        resp = post(gw, sealed(gw, chat(stream=True))[0])
        lines = served_records(records, 400)
    outcomes = [getattr(r, "fields", {}).get("outcome") for r in lines]
    assert (resp.status_code, error_code(resp)) == (500, "internal_error")
    assert outcomes == ["internal_error"]
    assert tokens_today(gw) == 0
    metrics = httpx.get(gw.url + "/metrics").text
    assert 'tandem_gateway_requests_total{outcome="internal_error"} 1.0' in metrics
    assert 'tandem_gateway_requests_total{outcome="ok"}' not in metrics


# --- 6. non-finite and unbounded configuration -----------------------------------------------


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
@pytest.mark.parametrize(
    "field", ["clock_window_s", "redis_timeout_s", "upstream_timeout_s", "usage_flush_s",
              "device_cache_s"],
)
def test_config_refuses_numbers_that_are_not_finite(field: str, value: float) -> None:
    with pytest.raises(ConfigurationError, match=f"{field}=.* must be a finite number"):
        GatewayConfig(**{field: value})  # type: ignore[arg-type]


def test_the_clock_window_is_at_most_an_hour() -> None:
    assert GatewayConfig(clock_window_s=3600.0).clock_window_s == 3600.0
    for bad in (3600.5, 1e9, 0.0, -1.0):
        with pytest.raises(ConfigurationError, match="clock_window_s"):
            GatewayConfig(clock_window_s=bad)
    for text in ("inf", "nan", "Infinity", "7200"):
        with pytest.raises(ConfigurationError, match="clock_window_s"):
            load_gateway_config({"TANDEM_GATEWAY_CLOCK_WINDOW_S": text})


# --- 9. an answer no frame can carry ---------------------------------------------------------


def _opened(resp: httpx.Response, key: bytes) -> list[Any]:
    opener = FrameOpener(key)
    frames = opener.feed(resp.content)
    opener.close()
    return [json.loads(plaintext) for plaintext, _ in frames]


def test_an_answer_over_the_frame_limit_is_a_502_the_device_can_open(
    fake: tuple[FakeOpenAI, str], start_gateway: GatewayFactory
) -> None:
    usage = {"prompt_tokens": 1000, "completion_tokens": 300_000}
    answer(fake[0], json_body=completion(content="x" * MAX_FRAME_BYTES, usage=usage))
    gw = start_gateway(upstream_url=fake[1])
    envelope, key = sealed(gw, chat())
    before = tokens_today(gw)
    resp = served(lambda: post(gw, envelope))
    assert resp.status_code == 502
    (error,) = _opened(resp, key)  # one frame, within the limit
    assert error["error"]["code"] == "upstream_error"
    assert "frame limit" in error["error"]["message"]
    # The upstream produced it at the device's request: charged, though it could not be sent.
    assert tokens_today(gw) - before == 301_000


def test_a_streamed_chunk_over_the_frame_limit_ends_the_stream_with_an_error(
    fake: tuple[FakeOpenAI, str], start_gateway: GatewayFactory
) -> None:
    # An upstream that ignores `stream` answers JSON, delivered as one chunk: too big a one.
    async def handler(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        return web.json_response(completion(content="x" * MAX_FRAME_BYTES))

    fake[0].generate = handler
    gw = start_gateway(upstream_url=fake[1])
    envelope, key = sealed(gw, chat(stream=True))
    before = tokens_today(gw)
    resp = served(lambda: post(gw, envelope))
    assert resp.status_code == 200  # headers go before the first chunk is written
    (trailer,) = _opened(resp, key)
    assert trailer["usage"] is None
    assert (trailer["error"]["code"], trailer["error"]["status"]) == ("upstream_error", 502)
    assert "frame limit" in trailer["error"]["message"]
    assert tokens_today(gw) - before == PROMPT_ESTIMATE + 1  # the prompt and the chunk made


def test_a_streamed_event_over_the_frame_limit_is_refused_before_it_is_whole(
    fake: tuple[FakeOpenAI, str], start_gateway: GatewayFactory
) -> None:
    # 68 data: lines of 256 KiB, one event: the gateway stops collecting it at 16 MiB.
    line = b"data: " + b"x" * (1 << 18) + b"\n"
    answer(fake[0], raw=line * 68 + b"\ndata: [DONE]\n\n")
    gw = start_gateway(upstream_url=fake[1])
    envelope, key = sealed(gw, chat(stream=True))
    before = tokens_today(gw)
    resp = served(lambda: post(gw, envelope))
    assert resp.status_code == 502  # before the first chunk: its own status
    (trailer,) = _opened(resp, key)
    assert trailer["error"]["code"] == "upstream_error"
    assert "frame limit" in trailer["error"]["message"]
    assert tokens_today(gw) - before == 0


@pytest.mark.parametrize("first", [True, False], ids=["first", "mid-stream"])
def test_a_stream_line_over_the_line_reader_limit_is_an_upstream_error(
    fake: tuple[FakeOpenAI, str], start_gateway: GatewayFactory, first: bool
) -> None:
    # aiohttp's line reader refuses lines over 512 KiB (LineTooLong): an upstream fault,
    # not a gateway bug (500 internal_error).
    sent = b"" if first else b"data: " + json.dumps(chat_chunk("Hi")).encode() + b"\n\n"
    huge = b"data: " + json.dumps(chat_chunk("x" * (1 << 20))).encode() + b"\n\n"
    answer(fake[0], raw=sent + huge + b"data: [DONE]\n\n")
    gw = start_gateway(upstream_url=fake[1])
    envelope, key = sealed(gw, chat(stream=True))
    resp = post(gw, envelope)
    *chunks, trailer = _opened(resp, key)
    assert resp.status_code == (502 if first else 200)
    assert len(chunks) == (0 if first else 1)
    assert trailer["error"]["code"] == "upstream_error"
    assert "invalid stream line" in trailer["error"]["message"]


# --- 10. server-sent events over several data: lines ----------------------------------------


def test_an_event_split_over_several_data_lines_is_one_chunk(
    fake: tuple[FakeOpenAI, str], start_gateway: GatewayFactory
) -> None:
    first = json.dumps(chat_chunk("Hel", logprob=None), indent=1)  # a line per field
    second = json.dumps(chat_chunk("lo", logprob=None, finish="stop"))
    second_lines = second.replace(', "', ',\n"').splitlines()  # split between JSON items
    assert len(second_lines) > 2
    usage = json.dumps({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
    raw = "".join([
        ": a comment\r\n",
        "".join(f"data: {line}\r\n" for line in first.splitlines()), "\r\n",
        "event: message\n", "".join(f"data:{line}\n" for line in second_lines), "\n",
        f"id: 3\ndata: {usage}\n\n",
        "data: [DONE]\n\n",
    ]).encode()
    answer(fake[0], raw=raw)
    gw = start_gateway(upstream_url=fake[1])
    envelope, key = sealed(gw, chat(stream=True))
    resp = post(gw, envelope)
    assert resp.status_code == 200
    *chunks, trailer = _opened(resp, key)
    assert [c["choices"][0]["delta"]["content"] for c in chunks if c["choices"]] == ["Hel", "lo"]
    assert len(chunks) == 3
    assert trailer == {"usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
                       "error": None}

