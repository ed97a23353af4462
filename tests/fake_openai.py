"""A scriptable OpenAI-compatible server on a loopback port, for the server engine's fault tests.

Each route answers with what the test put in `FakeOpenAI`: a `/v1/models` body, and a
handler for the generation routes (by default a short well-formed chat stream). The server
records when a client dropped a generating connection (`disconnected`), which is how a
test sees that the engine told the server to stop.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.conftest_gateway import ThreadedServer

Handler = Callable[[web.Request, dict[str, Any]], Awaitable[web.StreamResponse]]


@dataclass
class StoppedRead:
    """What `stop_after_first` saw: the items read, errors raised while reading, whether the
    first item came, and whether the reader ended within the wait."""

    items: list[Any] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    got_first: bool = False
    ended: bool = False


def stop_after_first(stream: Iterable[Any], stop: Callable[[], None], *,
                     first_wait_s: float = 10.0, end_wait_s: float = 10.0) -> StoppedRead:
    """Read `stream` on a thread; once its first item has come, call `stop` from this thread
    (as a client that goes away does) and give the reader `end_wait_s` to end. A stalled
    server keeps a reader that was not really stopped waiting far longer."""
    seen = StoppedRead()
    first = threading.Event()

    def read() -> None:
        try:
            for item in stream:
                seen.items.append(item)
                first.set()
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            seen.errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    seen.got_first = first.wait(first_wait_s)
    stop()
    reader.join(end_wait_s)
    seen.ended = not reader.is_alive()
    return seen


def sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {data}\n\n".encode()


def chat_chunk(content: str, logprob: float | None = -0.5, finish: str | None = None,
               **extra: Any) -> dict[str, Any]:
    """One chat stream chunk with one token (and its log-prob unless `logprob` is None)."""
    logprobs = None
    if logprob is not None:
        logprobs = {"content": [{"token": content, "logprob": logprob,
                                 "top_logprobs": [{"token": content, "logprob": logprob}]}]}
    choice = {"index": 0, "delta": {"content": content}, "logprobs": logprobs,
              "finish_reason": finish}
    return {"choices": [choice], **extra}


class FakeOpenAI:
    """What the fake server answers; change the attributes between requests."""

    def __init__(self) -> None:
        self.models: tuple[int, str, str] = (
            200, "application/json", json.dumps({"data": [{"id": "fake"}]}))
        self.generate: Handler = self.well_formed
        self.generating = threading.Event()  # a generation request arrived
        self.disconnected = threading.Event()  # a client dropped a generating connection

    async def well_formed(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        return await self.stream(request, [
            chat_chunk("Hi"), chat_chunk("!", finish="stop"),
            {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}])

    async def stream(self, request: web.Request, chunks: list[dict[str, Any] | str],
                     *, done: bool = True) -> web.StreamResponse:
        """Send `chunks` as SSE (then `[DONE]`)."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for chunk in chunks:
            await response.write(sse(chunk))
        if done:
            await response.write(sse("[DONE]"))
        await response.write_eof()
        return response

    async def stall(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        """Send one token, then nothing for 60 s unless the client goes away first."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(sse(chat_chunk("Hi")))
        await self._until_gone(request, 60.0)
        return response

    async def hold(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        """Answer nothing (not even headers) for 60 s unless the client goes away first, as a
        model working on a long non-streamed answer; then a 504."""
        await self._until_gone(request, 60.0)
        return web.json_response({"error": {"message": "held too long"}}, status=504)

    async def _until_gone(self, request: web.Request, seconds: float) -> None:
        """Wait `seconds`, or until the client closes the connection (then `disconnected`)."""
        for _ in range(int(seconds * 10)):
            transport = request.transport
            if transport is None or transport.is_closing():
                self.disconnected.set()
                return
            await asyncio.sleep(0.1)

    def app(self) -> web.Application:
        async def models(request: web.Request) -> web.Response:
            status, content_type, text = self.models
            return web.Response(status=status, content_type=content_type, text=text)

        async def generate(request: web.Request) -> web.StreamResponse:
            body = await request.json()
            self.generating.set()
            return await self.generate(request, body)

        app = web.Application()
        app.router.add_get("/v1/models", models)
        app.router.add_post("/v1/chat/completions", generate)
        app.router.add_post("/v1/completions", generate)
        return app


@contextmanager
def fake_openai() -> Iterator[tuple[FakeOpenAI, str]]:
    """A running fake server: (its script, its base URL ending in /v1)."""
    fake = FakeOpenAI()
    server = ThreadedServer(fake.app()).start()
    try:
        yield fake, server.url + "/v1"
    finally:
        server.stop()
