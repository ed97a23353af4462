"""The embedded upstream: a `kernels.Engine` in the gateway process, so it runs alone on a laptop.

The engine decodes one request at a time (llama.cpp contexts are not shareable), in a worker
thread so that the event loop keeps serving keys, health checks and rejections meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from typing import Any

from cloud_gateway.errors import UpstreamError, UpstreamRefusedRequest, UpstreamUnavailable
from cloud_gateway.tasks import finish_then_cancel
from kernels.base import Engine, GenerationParams, Message, TokenEvent, generate
from kernels.errors import ContextOverflowError, EngineError

EngineLoader = Callable[[], Engine]

_DONE = object()


class EngineUpstream:
    """Serves chat requests from an engine, given directly or loaded lazily by `loader`."""

    def __init__(
        self,
        engine: Engine | None = None,
        *,
        loader: EngineLoader | None = None,
        model_name: str = "",
    ) -> None:
        if engine is None and loader is None:
            raise ValueError("EngineUpstream needs an engine or a loader")
        self._engine = engine
        self._loader = loader
        self._model_name = model_name
        self._owns_engine = engine is None
        self._load_task: asyncio.Task[Engine] | None = None
        self._load_error: str = ""
        self._turn = asyncio.Lock()

    async def _get_engine(self) -> Engine:
        if self._engine is not None:
            return self._engine
        if self._load_task is None:
            assert self._loader is not None
            self._load_task = asyncio.create_task(asyncio.to_thread(self._loader))
        try:
            self._engine = await asyncio.shield(self._load_task)
        except (EngineError, OSError, ValueError) as exc:
            self._load_error = str(exc)
            raise UpstreamUnavailable(f"the embedded model failed to load: {exc}") from None
        return self._engine

    def _name(self, engine: Engine) -> str:
        return self._model_name or engine.info.id

    @staticmethod
    def _prompt_and_params(request: dict[str, Any]) -> tuple[list[Message], GenerationParams]:
        try:
            messages = [Message.from_dict(m) for m in request["messages"]]
            params = GenerationParams(
                max_tokens=int(request.get("max_tokens", 256)),
                temperature=float(request.get("temperature", 0.0)),
                top_p=float(request.get("top_p", 1.0)) or 1.0,
                seed=request.get("seed"),
                stop=tuple(request.get("stop", ())),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UpstreamRefusedRequest(
                f"the engine cannot take this request: {exc}", upstream_status=400
            ) from None
        return messages, params

    async def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        """Generate the whole answer in a worker thread; return a `chat.completion`.
        Cancelled (the device left), it stops decoding after the current token."""
        engine = await self._get_engine()
        messages, params = self._prompt_and_params(request)
        async with self._turn:
            cancel = threading.Event()
            decoding = asyncio.ensure_future(
                asyncio.to_thread(generate, engine, messages, params, cancel)
            )
            try:
                # The device left: stop decoding, and keep the engine (this lock) until the
                # thread has let go of it, or the next request would decode on it meanwhile.
                gen = await finish_then_cancel(decoding, on_cancel=cancel.set)
            except ContextOverflowError as exc:
                raise UpstreamRefusedRequest(str(exc), upstream_status=400) from None
            except EngineError as exc:
                raise UpstreamError(f"the embedded engine failed: {exc}") from None
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self._name(engine),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": gen.text},
                    "finish_reason": _finish(gen.finish_reason),
                }
            ],
            "usage": gen.usage.to_dict(),
        }

    async def stream(self, request: dict[str, Any]) -> AsyncGenerator[bytes, None]:
        """Yield `chat.completion.chunk` JSON per token; the last chunk carries usage."""
        engine = await self._get_engine()
        messages, params = self._prompt_and_params(request)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        cancel = threading.Event()
        base = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self._name(engine),
        }

        def run() -> None:
            try:
                tokens = engine.stream(messages, params, cancel)
                for event in tokens:
                    loop.call_soon_threadsafe(queue.put_nowait, event)
                usage = tokens.usage.to_dict() if tokens.usage else None
                loop.call_soon_threadsafe(queue.put_nowait, (tokens.finish_reason, usage))
            except Exception as exc:  # noqa: BLE001 - handed to the event loop as a value
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _DONE)

        async with self._turn:
            worker = loop.run_in_executor(None, run)
            try:
                first = True
                while (item := await queue.get()) is not _DONE:
                    if isinstance(item, ContextOverflowError):
                        raise UpstreamRefusedRequest(str(item), upstream_status=400)
                    if isinstance(item, Exception):
                        raise UpstreamError(f"the embedded engine failed: {item}")
                    if isinstance(item, TokenEvent):
                        delta: dict[str, str] = {"content": item.text}
                        if first:
                            delta["role"] = "assistant"
                            first = False
                        choice = {"index": 0, "delta": delta, "finish_reason": None}
                        yield json.dumps({**base, "choices": [choice]}).encode()
                    elif isinstance(item, tuple):
                        reason, usage = item
                        choice = {"index": 0, "delta": {}, "finish_reason": _finish(reason)}
                        yield json.dumps({**base, "choices": [choice], "usage": usage}).encode()
            finally:
                cancel.set()  # the client went away or we failed: stop decoding
                await worker

    async def ready(self) -> tuple[bool, str]:
        """Ready once the model is loaded; the first call starts loading it."""
        if self._engine is not None:
            return True, ""
        if self._load_error:
            return False, f"model failed to load: {self._load_error}"
        if self._load_task is None:
            task = asyncio.create_task(self._get_engine())
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return False, "loading the embedded model"

    async def close(self) -> None:
        if self._load_task is not None and self._engine is None:
            # A load still in flight owns a model: wait for it so that it is closed too.
            with contextlib.suppress(EngineError, OSError, ValueError):
                self._engine = await self._load_task
        if self._owns_engine and self._engine is not None:
            self._engine.close()
            self._engine = None


def _finish(reason: object) -> str:
    return "length" if reason == "length" else "stop"
