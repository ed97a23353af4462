"""Chat-completion response bodies, and the SSE stream of an answer (OpenAI framing).

A worker thread starts the answer and pumps its text into a `_Mailbox`; the event loop
writes at most every `server.stream_interval_ms` (first and last piece at once), then a
final chunk carrying `usage` and the `tandem` object, then `data: [DONE]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

from runtime.api_errors import error_body, internal_error, map_runtime_error
from runtime.facade import ResultStream
from runtime.local import LocalPiece
from runtime.result import Result


def completion_body(result: Result, cid: str, created: int, model: str,
                    logprobs: bool = False) -> dict[str, Any]:
    """The chat.completion body; `logprobs`: with the answer's token log-probabilities in
    OpenAI's shape (null where there are none: a cloud answer)."""
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.text},
                "finish_reason": _finish(result),
                "logprobs": _token_list(result.token_logprobs) if logprobs else None,
            }
        ],
        "usage": result.usage.to_dict(),
        "tandem": result.tandem(),
    }


def _token_list(tokens: Sequence[tuple[str, float]] | None) -> dict[str, Any] | None:
    """OpenAI's `logprobs` object for these tokens (None for none, or if a log-prob is
    unknown: NaN is not JSON)."""
    if tokens is None or any(lp != lp for _, lp in tokens):
        return None
    return {"content": [
        {"token": text, "logprob": lp, "bytes": list(text.encode()), "top_logprobs": []}
        for text, lp in tokens
    ]}


def _finish(result: Result) -> str:
    # OpenAI has no "cancelled"; a cancelled answer was cut short like a length stop.
    return "length" if result.finish_reason == "cancelled" else result.finish_reason


def _chunk(cid: str, created: int, model: str, delta: dict[str, str],
           finish: str | None = None, logprobs: dict[str, Any] | None = None
           ) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                     "logprobs": logprobs}],
    }


_DONE = object()


class _Mailbox:
    """Items handed from the generating thread to the event loop, with one wakeup per batch."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._items: list[object] = []
        self._lock = threading.Lock()
        self._ready = asyncio.Event()
        self.ended = asyncio.Event()  # the last item is in: flush without waiting

    def put(self, item: object, *, last: bool = False) -> None:
        with self._lock:
            ring = not self._items
            self._items.append(item)
        if ring:
            self._loop.call_soon_threadsafe(self._ready.set)
        if last:
            self._loop.call_soon_threadsafe(self.ended.set)

    async def take(self) -> list[object]:
        while True:
            await self._ready.wait()
            with self._lock:
                items, self._items = self._items, []
                self._ready.clear()
            if items:
                return items


def _settle(future: asyncio.Future[ResultStream], stream: ResultStream | None,
            exc: BaseException | None) -> None:
    if not future.done():  # the handler may have been cancelled meanwhile
        if exc is not None:
            future.set_exception(exc)
        else:
            assert stream is not None
            future.set_result(stream)


async def stream_sse(
    request: web.Request,
    pool: ThreadPoolExecutor,
    start: Callable[[], ResultStream],
    cancel: threading.Event,
    created: int,
    model: str,
    interval: float,
    mode_param: str | None = None,
    logprobs: bool = False,
) -> web.StreamResponse:
    """SSE: text is written at most every `interval` seconds (the first and last at once).

    One worker thread starts the answer and pumps its pieces into a mailbox. The 200 and
    the headers wait for the answer's first piece (or its end): what fails before any text
    — a cloud-only call, a cloud route's local fallback overflowing the context, … (the
    cloud route starts its work only when first read) — is then the request's mapped
    4xx/5xx, as it is unstreamed, not a 200 with an error chunk. An error after text has
    gone is an error chunk with the mapped error's type, param and code.
    `logprobs`: each chunk of a local answer carries the tokens its text completes (see
    `LocalPiece`; null for cloud text), and the final chunk those whose text never came
    (held back by a stop string that then matched), so a whole local answer's chunks list
    exactly the tokens a non-streamed answer does.
    """
    loop = asyncio.get_running_loop()
    mailbox = _Mailbox(loop)
    ready: asyncio.Future[ResultStream] = loop.create_future()

    def work() -> None:
        try:
            stream = start()
        except BaseException as exc:  # noqa: BLE001 - becomes the 4xx/5xx of the request
            loop.call_soon_threadsafe(_settle, ready, None, exc)
            return
        try:
            try:
                first = next(stream, _DONE)
            except BaseException as exc:  # noqa: BLE001 - before any text: a 4xx/5xx
                loop.call_soon_threadsafe(_settle, ready, None, exc)
                return
            loop.call_soon_threadsafe(_settle, ready, stream, None)
            try:
                if first is not _DONE:
                    mailbox.put(first)
                    for piece in stream:
                        mailbox.put(piece)
                mailbox.put(_DONE, last=True)
            except BaseException as exc:  # noqa: BLE001 - forwarded to the event loop
                mailbox.put(exc, last=True)
        finally:
            stream.close()  # on this thread: never while another one iterates it

    worker = loop.run_in_executor(pool, work)
    try:
        stream = await ready
    except asyncio.CancelledError:
        cancel.set()  # the client went away: the worker stops and closes the stream
        raise
    except Exception as exc:  # noqa: BLE001 - mapped to a 4xx/5xx body or re-raised
        await worker
        raise map_runtime_error(exc, mode_param) from exc
    cid = stream.id or f"chatcmpl-{uuid.uuid4().hex[:24]}"

    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                 "X-Accel-Buffering": "no"}
    )
    try:
        await response.prepare(request)
        await _send(response, _chunk(cid, created, model, {"role": "assistant", "content": ""}))
        finished = False
        last_write = 0.0
        sent = 0  # tokens sent with their text so far
        while not finished:
            wait = last_write + interval - loop.time()
            if wait > 0 and not mailbox.ended.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(mailbox.ended.wait(), wait)
            text: list[str] = []
            tokens: list[tuple[str, float]] = []
            for item in await mailbox.take():
                if item is _DONE:
                    finished = True
                elif isinstance(item, BaseException):
                    if text:
                        await _send(response, _chunk(cid, created, model,
                                                     {"content": "".join(text)}, None,
                                                     _token_list(tokens or None)))
                        text = []
                    err = (map_runtime_error(item, mode_param) if isinstance(item, Exception)
                           else internal_error(item))
                    await _send(response, error_body(err))
                    finished = True
                    break
                else:
                    assert isinstance(item, str)
                    text.append(item)
                    if logprobs and isinstance(item, LocalPiece):
                        tokens.extend(item.tokens)
            if text:
                sent += len(tokens)
                await _send(response, _chunk(cid, created, model, {"content": "".join(text)},
                                             None, _token_list(tokens or None)))
                last_write = loop.time()
        result = stream.result
        if result is not None:
            rest = (result.token_logprobs or ())[sent:] if logprobs else ()
            final = _chunk(cid, created, model, {}, _finish(result),
                           _token_list(rest or None))
            final["usage"] = result.usage.to_dict()
            final["tandem"] = result.tandem()
            await _send(response, final)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
    except ConnectionResetError:
        stream.cancel()  # the client went away: stop generating, free the engine
    except asyncio.CancelledError:
        stream.cancel()
        raise
    finally:
        stream.cancel()
        await worker  # it closes the stream
    return response


async def _send(response: web.StreamResponse, payload: dict[str, Any]) -> None:
    await response.write(b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n")
