"""The server engine against a scriptable fake OpenAI-compatible server (tests/fake_openai.py):
streams abandoned early or stalled, and servers that answer with malformed output."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiohttp import web

from kernels import (
    ContextOverflowError,
    EngineError,
    EngineUnavailableError,
    GenerationParams,
    Message,
    ModelNotFoundError,
    generate,
)
from kernels.openai_engine import OpenAIEngine
from kernels.openai_protocol import entropy_lower_bound
from tests.conftest_gateway import ThreadedServer
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


# -- counting tokens on the server's tokenize route ----------------------------------------

Asked = list[tuple[str, dict[str, Any]]]


@contextlib.contextmanager
def _tokenizing_server(
    routes: dict[str, Callable[[dict[str, Any]], web.Response]],
) -> Iterator[tuple[FakeOpenAI, str, Asked]]:
    """`fake_openai` with tokenize routes beside /v1 (where servers have them): each answers
    a request's JSON body with `routes[path](body)`. Also yields the (path, body) asked."""
    fake = FakeOpenAI()
    app = fake.app()
    asked: Asked = []

    def route(path: str, answer: Callable[[dict[str, Any]], web.Response],
              ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            body = await request.json()
            asked.append((path, body))
            return answer(body)
        return handle

    for path, answer in routes.items():
        app.router.add_post(path, route(path, answer))
    server = ThreadedServer(app).start()
    try:
        yield fake, server.url + "/v1", asked
    finally:
        server.stop()


def _llama_server_tokenize(body: dict[str, Any]) -> web.Response:
    # llama.cpp's llama-server (handle_tokenize): a body without "content" tokenizes nothing
    words = str(body["content"]).split() if "content" in body else []
    return web.json_response({"tokens": list(range(len(words)))})


def test_llama_servers_tokenize_route_counts_the_prompt() -> None:
    with _tokenizing_server({"/tokenize": _llama_server_tokenize}) as (fake, url, asked):
        eng = OpenAIEngine(url, "fake", top_logprobs=0, context_length=64)
        try:
            # was 0: its {"tokens": []} for vLLM's body was taken for a count
            assert eng.count_tokens("word " * 500) == 500
            with pytest.raises(ContextOverflowError, match="prompt is 500 tokens.*context is 64"):
                eng.stream("word " * 500, GenerationParams(max_tokens=4))
            assert eng.count_tokens("two words") == 2
        finally:
            eng.close()
    assert not fake.generating.is_set()  # refused before sending
    # vLLM's body, then llama-server's, which is the one used from then on
    assert [sorted(body) for _, body in asked] == [
        ["model", "prompt"], ["content"], ["content"], ["content"]]


def test_a_count_of_zero_for_some_text_does_not_choose_the_route() -> None:
    # a server that ignores the body it was sent counts nothing, whatever the text
    routes = {"/extras/tokenize/count": lambda body: web.json_response({"count": 0}),
              "/tokenize": _llama_server_tokenize}
    with _tokenizing_server(routes) as (_fake, url, asked):
        eng = OpenAIEngine(url, "fake", top_logprobs=0)
        try:
            assert eng.count_tokens("") == 0  # true of the empty text, but proves nothing
            assert eng.count_tokens("word " * 500) == 500
            assert eng.count_tokens("two words") == 2
        finally:
            eng.close()
    assert [(path, sorted(body)) for path, body in asked] == [
        ("/extras/tokenize/count", ["input"]),
        ("/extras/tokenize/count", ["input"]), ("/tokenize", ["model", "prompt"]),
        ("/tokenize", ["content"]),
        ("/tokenize", ["content"])]


def _reply(content_type: str, text: str) -> Callable[[dict[str, Any]], web.Response]:
    return lambda body: web.Response(status=200, content_type=content_type, text=text)


@pytest.mark.parametrize(("content_type", "text"), [
    ("text/html", "<!doctype html><html>app</html>"),  # a proxy's fallback page
    ("application/json", "[1, 2, 3]"),
    ("application/json", '"ok"'),
])
def test_tokenize_routes_answering_no_json_object_leave_the_estimate(content_type: str,
                                                                     text: str) -> None:
    reply = _reply(content_type, text)
    routes = {"/extras/tokenize/count": reply, "/tokenize": reply}
    with _tokenizing_server(routes) as (_fake, url, asked):
        eng = OpenAIEngine(url, "fake", top_logprobs=0)
        try:
            assert eng.count_tokens("hello world!") == 3  # 12 characters / 4: the estimate
            gen = generate(eng, QUESTION, GenerationParams(max_tokens=5))
        finally:
            eng.close()
    assert gen.text == "Hi!" and gen.finish_reason == "stop"
    assert len(asked) == 3  # each route once; then never again


def test_a_tokenize_route_answering_html_is_passed_over_for_the_next() -> None:
    def vllm(body: dict[str, Any]) -> web.Response:
        if "prompt" not in body:
            return web.json_response({"object": "error", "message": "prompt: Field required"},
                                     status=400)
        tokens = list(range(len(str(body["prompt"]).split())))
        return web.json_response({"count": len(tokens), "max_model_len": 2048, "tokens": tokens})

    routes = {"/extras/tokenize/count": _reply("text/html", "<html>app</html>"), "/tokenize": vllm}
    with _tokenizing_server(routes) as (_fake, url, asked):
        eng = OpenAIEngine(url, "fake", top_logprobs=0)
        try:
            assert eng.count_tokens("one two three") == 3
            assert eng.count_tokens("one two three four") == 4
        finally:
            eng.close()
    assert [path for path, _ in asked] == ["/extras/tokenize/count", "/tokenize", "/tokenize"]


def test_a_raw_prompt_asks_mlc_serve_for_no_more_alternatives_than_it_allows() -> None:
    asked: list[int] = []
    with fake_openai() as (fake, url):
        async def mlc(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
            if "prompt" not in body:
                return await fake.well_formed(request, body)  # chat: up to 20 alternatives
            asked.append(body["logprobs"])
            if not 0 <= body["logprobs"] <= 5:  # its CompletionRequest's check, as FastAPI says
                return web.json_response({"detail": [
                    {"msg": 'Value error, "logprobs" must be in range [0, 5]'}]}, status=422)
            top = [{"token": " Paris", "logprob": -0.25}, {"token": " the", "logprob": -2.0}]
            return await fake.stream(request, [{"choices": [{
                "index": 0, "text": " Paris", "finish_reason": "stop",
                "logprobs": {"content": [
                    {"token": " Paris", "logprob": -0.25, "top_logprobs": top}]}}]}])

        fake.generate = mlc
        eng = OpenAIEngine(url, "fake")
        try:
            assert eng.info.has_logprobs
            gen = generate(eng, "The capital of France is", GenerationParams(max_tokens=4))
        finally:
            eng.close()
    assert asked == [5]
    assert gen.text == " Paris" and gen.finish_reason == "stop"
    assert gen.tokens[0].logprob == -0.25
    assert gen.tokens[0].entropy == pytest.approx(entropy_lower_bound([-0.25, -2.0]))
