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
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web

from tests.conftest_gateway import ThreadedServer

Handler = Callable[[web.Request, dict[str, Any]], Awaitable[web.StreamResponse]]


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
        for _ in range(600):
            transport = request.transport
            if transport is None or transport.is_closing():
                self.disconnected.set()
                break
            await asyncio.sleep(0.1)
        return response

    def app(self) -> web.Application:
        async def models(request: web.Request) -> web.Response:
            status, content_type, text = self.models
            return web.Response(status=status, content_type=content_type, text=text)

        async def generate(request: web.Request) -> web.StreamResponse:
            return await self.generate(request, await request.json())

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
