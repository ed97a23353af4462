"""The server engine against a scriptable fake OpenAI-compatible server (tests/fake_openai.py):
streams abandoned early or stalled, and servers that answer with malformed output."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from kernels import (
    EngineError,
    EngineUnavailableError,
    GenerationParams,
    Message,
    ModelNotFoundError,
    generate,
)
from kernels.openai_engine import OpenAIEngine
from kernels.openai_protocol import entropy_lower_bound
from tests.fake_openai import (
    FakeOpenAI,
    Handler,
    chat_chunk,
    fake_openai,
    sse,
    stop_after_first,
)

QUESTION = [Message("user", "Name three colours.")]


@contextlib.contextmanager
def _stalled_engine() -> Iterator[tuple[FakeOpenAI, OpenAIEngine]]:
    """An engine on a server that sends one token, then nothing for 60 s; closed after."""
    with fake_openai() as (fake, url):
        fake.generate = fake.stall
        eng = OpenAIEngine(url, "fake", top_logprobs=0)
        try:
            yield fake, eng
        finally:
            eng.close()


def test_a_stream_closed_before_its_first_token_drops_the_connection() -> None:
    with _stalled_engine() as (fake, eng):
        stream = eng.stream(QUESTION, GenerationParams(max_tokens=50))  # sent now
        stream.close()  # never iterated: the server must still be told to stop
        assert fake.disconnected.wait(10)


def test_cancel_from_another_thread_ends_a_stalled_stream() -> None:
    with _stalled_engine() as (fake, eng):
        cancel = threading.Event()
        stream = eng.stream(QUESTION, GenerationParams(max_tokens=50), cancel)
        # cancel as the runtime does, after the one token before a 60 s stall
        seen = stop_after_first(stream, cancel.set)
        assert seen.got_first and seen.ended
        assert seen.errors == []
        assert [e.text for e in seen.items] == ["Hi"]
        assert stream.finish_reason == "cancelled"
        assert stream.usage is not None and stream.usage.completion_tokens == 1
        assert fake.disconnected.wait(10)


def test_close_from_another_thread_ends_a_stalled_stream() -> None:
    with _stalled_engine() as (fake, eng):
        stream = eng.stream(QUESTION, GenerationParams(max_tokens=50))
        seen = stop_after_first(stream, stream.close)  # was "generator already executing"
        assert seen.got_first and seen.ended and seen.errors == []
        assert stream.finish_reason == "cancelled"
        assert fake.disconnected.wait(10)


MALFORMED_CHUNKS = [
    ({"choices": [{"index": "a", "delta": {"content": "x"}}]}, "index is not a number"),
    ({"choices": {"index": 0, "delta": {"content": "x"}}}, "choices is not a list"),
    ({"choices": ["x"]}, "a choice is not an object"),
    ({"choices": [{"index": 0, "delta": "x"}]}, "malformed chunk"),
]


@pytest.mark.parametrize(("chunk", "why"), MALFORMED_CHUNKS)
def test_a_malformed_chunk_is_an_engine_error(chunk: dict[str, Any], why: str) -> None:
    with fake_openai() as (fake, url):
        async def send(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
            return await fake.stream(request, [chunk])

        fake.generate = send
        eng = OpenAIEngine(url, "fake", top_logprobs=0)
        try:
            with pytest.raises(EngineError, match=why) as raised:
                generate(eng, QUESTION, GenerationParams(max_tokens=5))
        finally:
            eng.close()
    assert type(raised.value) is EngineError  # a server fault (exit 1), not a usage error


def test_null_numbers_from_the_server_count_as_not_given() -> None:
    with fake_openai() as (fake, url):
        async def send(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
            first = chat_chunk("Hi")
            first["choices"][0]["logprobs"]["content"][0]["top_logprobs"].append(
                {"token": "Ho", "logprob": None})
            return await fake.stream(request, [
                first, chat_chunk("!", finish="stop"),
                {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": None}}])

        fake.generate = send
        eng = OpenAIEngine(url, "fake")
        try:
            gen = generate(eng, QUESTION, GenerationParams(max_tokens=5))
        finally:
            eng.close()
    assert gen.text == "Hi!" and gen.finish_reason == "stop"
    assert gen.usage.completion_tokens == 2  # counted from the steps
    assert gen.tokens[0].logprob == -0.5
    assert gen.tokens[0].entropy == pytest.approx(entropy_lower_bound([-0.5]))


@pytest.mark.parametrize(("content_type", "body", "why"), [
    ("text/html", "<html>gateway</html>", "answered /models with no JSON"),
    ("application/json", '[{"id": "x"}]', "without a data list"),
    ("application/json", '{"data": [{"name": "x"}]}', "a model without an id"),
])
def test_a_malformed_model_list_is_an_engine_error(content_type: str, body: str,
                                                  why: str) -> None:
    with fake_openai() as (fake, url):
        fake.models = (200, content_type, body)
        with pytest.raises(EngineError, match=why) as raised:
            OpenAIEngine(url)
    assert type(raised.value) is EngineError


def test_a_probe_stream_cut_short_is_engine_unavailable() -> None:
    with fake_openai() as (fake, url):
        async def cut(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await response.write(sse(chat_chunk("Hi")))
            assert request.transport is not None
            request.transport.close()  # mid-body: no final chunk, no [DONE]
            return response

        fake.generate = cut
        with pytest.raises(EngineUnavailableError, match="while probing for log-probs"):
            OpenAIEngine(url, "fake")


def refuse(status: int, message: str) -> Handler:
    async def send(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        return web.json_response({"error": {"message": message}}, status=status)
    return send


def test_a_server_rejecting_the_logprob_fields_runs_without_confidence() -> None:
    with fake_openai() as (fake, url):
        fake.generate = refuse(400, "logprobs are not supported")
        eng = OpenAIEngine(url, "fake")
        eng.close()
    assert eng.info.has_logprobs is False and eng.info.extra["entropy"] == "none"


def test_a_server_still_warming_up_is_unavailable_not_without_confidence() -> None:
    with fake_openai() as (fake, url):
        fake.generate = refuse(503, "model is loading")
        with pytest.raises(EngineUnavailableError, match="not ready.*503.*model is loading"):
            OpenAIEngine(url, "fake")


def test_a_model_the_server_does_not_have_is_model_not_found_at_load() -> None:
    with fake_openai() as (fake, url):
        fake.generate = refuse(404, "The model `nope` does not exist.")
        with pytest.raises(ModelNotFoundError, match="does not have that model"):
            OpenAIEngine(url, "nope")


def test_a_completion_budget_past_vllms_context_is_capped_to_the_room_left() -> None:
    asked: list[int] = []
    with fake_openai() as (fake, url):
        async def vllm(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
            asked.append(body["max_tokens"])
            if 1900 + body["max_tokens"] > 2048:
                return web.json_response({"object": "error", "message": (
                    "This model's maximum context length is 2048 tokens. However, you requested "
                    f"{1900 + body['max_tokens']} tokens (1900 in the messages, "
                    f"{body['max_tokens']} in the completion). Please reduce the length.")},
                    status=400)
            return await fake.well_formed(request, body)

        fake.generate = vllm
        eng = OpenAIEngine(url, "fake", top_logprobs=0, context_length=2048)
        try:
            gen = generate(eng, QUESTION, GenerationParams(max_tokens=256))
        finally:
            eng.close()
    assert asked == [256, 148]  # refused, then sent again with the room the context has
    assert gen.text == "Hi!" and gen.finish_reason == "stop"


def test_a_runtime_stream_cancelled_while_the_server_stalls_ends_at_once() -> None:
    # the device API cancels a request whose client went away; the runtime used to pass
    # that on to the engine only between tokens, so a stalled server held the engine
    from runtime.config import RuntimeConfig, load_config
    from runtime.facade import Runtime

    with fake_openai() as (fake, url):
        fake.generate = fake.stall
        eng = OpenAIEngine(url, "fake", top_logprobs=0)
        cfg = load_config(env={}).replace(runtime=RuntimeConfig(telemetry_path="off"))
        with Runtime(cfg, engine=eng) as rt:
            stream = rt.stream(QUESTION, mode="local-only", params=rt.params(max_tokens=50))
            seen = stop_after_first(stream, stream.cancel)  # then nothing for 60 s
            assert seen.got_first and seen.ended
            assert seen.items == ["Hi"]
            assert stream.result is not None and stream.result.finish_reason == "cancelled"
            assert fake.disconnected.wait(10)
