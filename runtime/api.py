"""The device HTTP API (aiohttp): OpenAI-compatible chat completions plus device endpoints.

    POST /v1/chat/completions   stream true/false; responses carry a `tandem` object
    GET  /v1/models             and /v1/models/{id}
    GET  /healthz
    GET  /v1/device/status      the resource snapshot
    POST /v1/device/signals     battery / thermal values pushed by an app
    POST /v1/feedback           a user's verdict on an answer (telemetry for the router)
    POST /v1/choose             a multiple-choice question: `Runtime.choose` (see below)

Errors are OpenAI-shaped: `{"error": {"message", "type", "param", "code"}}` with a 4xx
status for anything the client can fix; the server keeps serving after each.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypedDict

from aiohttp import web

from kernels import GenerationParams
from kernels.base import check_text
from runtime.api_errors import (
    MODE_HEADER,
    ApiError,
    errors_middleware,
    map_runtime_error,
    param_named,
)
from runtime.api_sse import completion_body, stream_sse
from runtime.choice import check_question
from runtime.errors import ModeError
from runtime.facade import ResultStream, Runtime
from runtime.monitor import PushedSignals
from runtime.request import CancelEvent
from runtime.result import Result
from runtime.telemetry import FeedbackError

RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime", Runtime)
# Generations block a thread each while they wait for the engine: a pool of their own
# (queue size + headroom) keeps them from starving the loop's default executor.
class Workers:
    """The threads requests run on, and how many are taken.

    A request gets a thread at once or a 429 `queue_full` at once: it never waits unseen for
    one. Cloud calls hold a thread while they wait on the network (up to
    `offload.deadline_s`), so with a stalled gateway they could take every thread, and a
    local request behind them would hang with `queued_ms` saying nothing. Used from the
    event loop only, so the count needs no lock.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.busy = 0
        self.pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="tandem-gen")

    @contextlib.contextmanager
    def taken(self) -> Iterator[ThreadPoolExecutor]:
        if self.busy >= self.size:
            raise ApiError(
                429, f"the server is busy: all {self.size} worker threads are taken "
                "(server.worker_threads); retry shortly", "queue_full",
                headers={"Retry-After": "1"})
        self.busy += 1
        try:
            yield self.pool
        finally:
            self.busy -= 1


WORKERS: web.AppKey[Workers] = web.AppKey("workers", Workers)


class RunOptions(TypedDict):
    handler_cancellation: bool


# How the app must be served (`web.run_app(app, **RUN_OPTIONS)` or `web.AppRunner`). aiohttp
# >= 3.9 cancels the handler of a client that disconnects only when asked: without it, a client
# that leaves a non-streamed answer keeps the engine generating it to the end.
RUN_OPTIONS: Final[RunOptions] = {"handler_cancellation": True}


class _NonFinite(ValueError):
    """NaN, Infinity or a number too large for a float: Python's json accepts them, JSON not."""


def _no_constant(name: str) -> float:
    raise _NonFinite(name)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NonFinite(text)
    return value


async def _json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except _NonFinite as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc} is not a finite number",
                       "invalid_json") from None
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "request body is not valid JSON", "invalid_json") from None
    except RecursionError:  # "[[[[…" nested deeper than the parser goes
        raise ApiError(400, "request body is not valid JSON: nested too deeply",
                       "invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object", "invalid_json")
    return body


def _opt(body: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise ApiError(400, f"{key} must be a number", "invalid_value", key)
    if kind is bool and not isinstance(value, bool):
        raise ApiError(400, f"{key} must be true or false, not {value!r}", "invalid_value", key)
    if not isinstance(value, kind):
        raise ApiError(400, f"{key} has the wrong type", "invalid_value", key)
    return value


def _mode_and_source(
    body_mode: str | None, body_key: str, request: web.Request
) -> tuple[str | None, str | None]:
    """The request's mode (body field, else the header) and where it came from, for errors."""
    if body_mode:
        return body_mode, body_key
    if MODE_HEADER in request.headers:
        return request.headers[MODE_HEADER], MODE_HEADER
    return None, None  # the server's default mode


# OpenAI request fields whose asked-for behaviour this API does not provide: a request that
# sets one to anything but its default is refused (400 `unsupported_value`, `param` naming
# it) instead of being answered as if it had not been set. The default values pass, since
# clients send them unasked.
_UNSUPPORTED: Final[tuple[tuple[str, tuple[object, ...], str], ...]] = (
    # (field, the values that ask for nothing more, why another value is refused)
    ("n", (1,), "one choice is generated per request: n must be 1"),
    ("top_logprobs", (0,), "alternative tokens' log-probabilities are not returned"),
    ("tools", ([],), "tools are not supported: no tool calls are made"),
    ("functions", ([],), "functions are not supported: no calls are made"),
    ("tool_choice", ("none", "auto"), "tool calls are not supported"),
    ("function_call", ("none", "auto"), "function calls are not supported"),
    ("response_format", ({"type": "text"},),
     "only text answers are supported (response_format type text)"),
    ("frequency_penalty", (0, 0.0), "frequency_penalty is not supported"),
    ("presence_penalty", (0, 0.0), "presence_penalty is not supported"),
    ("logit_bias", ({},), "logit_bias is not supported"),
)


def _refuse_unsupported(body: dict[str, Any]) -> None:
    for key, defaults, why in _UNSUPPORTED:
        value = body.get(key)
        # Same type and value (so true is not the 1 of n, nor 1.0 an integer's place).
        if value is None or any(type(value) is type(d) and value == d for d in defaults):
            continue
        raise ApiError(400, f"{why} (got {key} = {json.dumps(value)[:60]})",
                       "unsupported_value", key)


def parse_chat_request(
    body: dict[str, Any], runtime: Runtime, served: set[str]
) -> tuple[list[Any], GenerationParams, str | None, bool]:
    """Validate a chat-completions body: (messages, params, mode, stream)."""
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError(400, "model must be a string (a model id)", "invalid_value", "model")
    if model is not None and model not in served:
        raise ApiError(404, f"the model {model!r} does not exist (served: {sorted(served)})",
                       "model_not_found", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list", "invalid_value", "messages")
    _refuse_unsupported(body)
    stop = body.get("stop")
    if stop is not None and not (
        isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
    ):
        raise ApiError(400, "stop must be a string or a list of strings", "invalid_value", "stop")
    if stop == "" or (isinstance(stop, list) and "" in stop):
        # "" matches at once: the answer would be cut after its first piece
        raise ApiError(400, "stop strings must not be empty", "invalid_value", "stop")
    # OpenAI's newer name wins; an explicit 0 is an error, not "unset"
    tokens_key = "max_completion_tokens" if body.get("max_completion_tokens") is not None \
        else "max_tokens"
    max_tokens = _opt(body, tokens_key, int)
    if max_tokens is not None and max_tokens < 1:
        raise ApiError(400, f"{tokens_key} must be at least 1, not {max_tokens}",
                       "invalid_value", tokens_key)
    try:
        params = runtime.params(
            max_tokens=max_tokens,
            temperature=_opt(body, "temperature", (int, float)),
            top_p=_opt(body, "top_p", (int, float)),
            seed=_opt(body, "seed", int),
            stop=stop,
        )
    except ValueError as exc:
        raise ApiError(400, str(exc), "invalid_value",
                       param_named(str(exc), ("temperature", "top_p", "seed", "stop"))) from None
    ext = body.get("tandem") or {}
    if not isinstance(ext, dict):
        raise ApiError(400, "tandem must be an object", "invalid_value", "tandem")
    mode = ext.get("mode")
    if mode is not None and not isinstance(mode, str):
        raise ApiError(400, "tandem.mode must be a string", "invalid_value", "tandem.mode")
    stream = _opt(body, "stream", bool)
    _opt(body, "logprobs", bool)  # a type check (read by the caller)
    return messages, params, mode, bool(stream)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    runtime = request.app[RUNTIME]
    served = {runtime.config.server.model_name, runtime.config.model.spec}
    body = await _json_body(request)
    messages, params, mode, want_stream = parse_chat_request(body, runtime, served)
    logprobs = body.get("logprobs") is True  # its type checked above
    model = str(body.get("model") or runtime.config.server.model_name)
    mode, mode_param = _mode_and_source(mode, "tandem.mode", request)
    cancel = CancelEvent()  # a client that goes away stops the engine at once
    interval = runtime.config.server.stream_interval_ms / 1e3

    def start() -> ResultStream:
        # admission, validation and tokenisation happen here, so errors come before a 200
        return runtime.stream(messages, mode=mode, params=params, cancel=cancel,
                              pace_s=interval)

    created = int(time.time())
    if want_stream:
        with request.app[WORKERS].taken() as pool:
            return await stream_sse(request, pool, start, cancel, created, model, interval,
                                    mode_param, logprobs=logprobs)

    def answer() -> Result:
        # Not streamed: `Runtime.generate`, so a prefer-local cascade judges the whole answer
        # (with early escalation) as documented, not the first `stream_decide_tokens` tokens
        # a stream must decide on. Errors (queue full, context overflow, …) still come
        # before any response is written, and `cancel` stops it when the client goes away.
        return runtime.generate(messages, mode=mode, params=params, cancel=cancel)

    try:
        # one hop to a worker thread: start and collect there
        with request.app[WORKERS].taken() as pool:
            result = await asyncio.get_running_loop().run_in_executor(pool, answer)
    except ApiError:  # no thread free
        raise
    except asyncio.CancelledError:
        cancel.set()  # the client went away: stop generating, free the engine
        raise
    except Exception as exc:  # noqa: BLE001 - mapped to a 4xx/5xx body
        raise map_runtime_error(exc, mode_param) from exc
    cid = result.id or f"chatcmpl-{uuid.uuid4().hex[:24]}"
    return web.json_response(completion_body(result, cid, created, model, logprobs=logprobs))


def _served_names(runtime: Runtime) -> list[str]:
    names = [runtime.config.server.model_name]
    if runtime.config.model.spec not in names:
        names.append(runtime.config.model.spec)
    return names


def _model_object(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "tandem"}


async def list_models(request: web.Request) -> web.Response:
    data = [_model_object(n) for n in _served_names(request.app[RUNTIME])]
    return web.json_response({"object": "list", "data": data})


async def retrieve_model(request: web.Request) -> web.Response:
    """OpenAI's models.retrieve: one served model, or 404 model_not_found."""
    name = request.match_info["model"]
    served = _served_names(request.app[RUNTIME])
    if name not in served:
        raise ApiError(404, f"the model {name!r} does not exist (served: {sorted(served)})",
                       "model_not_found", "model")
    return web.json_response(_model_object(name))


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def device_status(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    snap = await asyncio.get_running_loop().run_in_executor(None, runtime.monitor.snapshot)
    return web.json_response(snap.to_dict())


async def device_signals(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    body = await _json_body(request)
    try:
        runtime.monitor.push(PushedSignals.from_dict(body))
    except (TypeError, ValueError) as exc:
        fields = tuple(f.name for f in dataclasses.fields(PushedSignals))
        raise ApiError(400, str(exc), "invalid_value", param_named(str(exc), fields)) from None
    # The cached snapshot, which the push has just recomposed: a refresh would run every
    # hardware probe (vcgencmd, sysfs) again, and not on the event loop, which serves streams.
    snap = await asyncio.get_running_loop().run_in_executor(None, runtime.monitor.snapshot)
    # null means "not reported in this push" (an earlier value stays until it expires)
    accepted = sorted(k for k, v in body.items() if v is not None)
    return web.json_response({"accepted": accepted, "snapshot": snap.to_dict()})


async def _executor_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[RUNTIME].config
    workers = Workers(config.server.worker_threads or config.runtime.queue_size + 32)
    app[WORKERS] = workers
    yield
    workers.pool.shutdown(wait=False, cancel_futures=True)


async def feedback(request: web.Request) -> web.Response:
    """`{"id": "chatcmpl-…", "good": true|false, "note": "…"}`: a user's verdict on an answer."""
    runtime = request.app[RUNTIME]
    body = await _json_body(request)
    answer_id, good, note = body.get("id"), body.get("good"), body.get("note", "")
    if not isinstance(answer_id, str) or not answer_id:
        raise ApiError(400, "id must be the id of an answer (the response's id)",
                       "invalid_value", "id")
    if not isinstance(good, bool):
        raise ApiError(400, "good must be true or false", "invalid_value", "good")
    if not isinstance(note, str):
        raise ApiError(400, "note must be a string", "invalid_value", "note")
    for value, name in ((answer_id, "id"), (note, "note")):
        try:
            check_text(value, name)
        except ValueError as exc:
            raise ApiError(400, str(exc), "invalid_value", name) from None
    try:
        await asyncio.get_running_loop().run_in_executor(
            None, runtime.feedback, answer_id, good, note)
    except FeedbackError as exc:
        raise ApiError(404, str(exc), "answer_not_found", "id") from None
    except ModeError as exc:
        raise ApiError(409, str(exc), "telemetry_off") from None
    except ValueError as exc:  # a note over telemetry.MAX_NOTE
        raise ApiError(400, str(exc), "invalid_value", "note") from None
    return web.json_response({"id": answer_id, "recorded": True})


async def choose(request: web.Request) -> web.Response:
    """`{"question": "…", "options": ["…", "…"], "mode": "…"?}` → a `ChoiceResult` object.

    The mode may also come from the `X-Tandem-Mode` header, as for chat completions.
    """
    runtime = request.app[RUNTIME]
    body = await _json_body(request)
    question, options = body.get("question"), body.get("options")
    if not isinstance(question, str):
        raise ApiError(400, "question must be a string", "invalid_value", "question")
    if not isinstance(options, list):
        raise ApiError(400, "options must be a list of strings", "invalid_value", "options")
    try:
        check_question(question, options)
    except ValueError as exc:
        param = "question" if str(exc).startswith("question") else "options"
        raise ApiError(400, str(exc), "invalid_value", param) from None
    mode, mode_param = _mode_and_source(_opt(body, "mode", str), "mode", request)
    try:
        with request.app[WORKERS].taken() as pool:
            result = await asyncio.get_running_loop().run_in_executor(
                pool, lambda: runtime.choose(question, options, mode=mode))
    except ApiError:  # no thread free
        raise
    except Exception as exc:  # noqa: BLE001 - mapped to a 4xx/5xx body
        raise map_runtime_error(exc, mode_param) from exc
    return web.json_response(result.to_dict())


def create_app(runtime: Runtime) -> web.Application:
    """Build the device API around a `Runtime` (which the caller owns and closes)."""
    app = web.Application(
        middlewares=[errors_middleware], client_max_size=runtime.config.server.max_body_bytes
    )
    app[RUNTIME] = runtime
    app.cleanup_ctx.append(_executor_ctx)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", retrieve_model)  # ids hold ':' and '/'
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/v1/device/status", device_status)
    app.router.add_post("/v1/device/signals", device_signals)
    app.router.add_post("/v1/feedback", feedback)
    app.router.add_post("/v1/choose", choose)
    return app
