"""The sealed chat endpoint: admit the envelope, forward upstream, seal the answer or stream.

Errors before admission are plain JSON 4xx (the gateway may not hold a response key yet);
errors after admission (the upstream failed) are sealed, because an upstream error message
can quote the request.

A device that disconnects cancels its handler (the app runs with `handler_cancellation`,
`app.RUN_OPTIONS`), also while the upstream is silent: the cancellation closes the upstream
request at once, and the request is still charged for what it used and logged with outcome
`client_disconnected`. A request that an error ended before the upstream produced anything
(no answer, no chunk) is not charged: the device got nothing, and would otherwise lose its
quota to retries of a cloud that is down. An answer (or chunk) too large for a frame was
produced, at the upstream's cost, at the device's request: it is charged, though refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeGuard

from aiohttp import web

from cloud_gateway.admission import Admitted
from cloud_gateway.errors import (
    GatewayError,
    PayloadTooLarge,
    UnsupportedMediaType,
    UpstreamError,
    UpstreamRateLimited,
)
from cloud_gateway.logs import LOGGER_NAME
from cloud_gateway.protocol.envelope import (
    REQUEST_CONTENT_TYPE,
    RESPONSE_CONTENT_TYPE,
    STREAM_CONTENT_TYPE,
)
from cloud_gateway.protocol.frames import MAX_FRAME_BYTES, FrameSealer, seal_response
from cloud_gateway.tasks import finish_then_cancel

if TYPE_CHECKING:
    from cloud_gateway.app import GatewayState


log = logging.getLogger(LOGGER_NAME)

# The most tokens one request may report: far above any model's context, far below what
# breaks a SQLite INTEGER or a Redis INCRBY once summed over a day.
MAX_REPORTED_TOKENS = 10**9
# The largest plaintext a frame can carry (its length counts the flag byte and the AEAD tag).
_MAX_FRAME_PLAINTEXT = MAX_FRAME_BYTES - 1 - 16


def estimate_tokens(text: str) -> int:
    """A token count for quota purposes when the upstream reports none: 4 characters a token,
    the usual rule of thumb for BPE vocabularies on English text."""
    return math.ceil(len(text) / 4)


def _prompt_estimate(body: dict[str, Any]) -> int:
    return sum(estimate_tokens(m["content"]) for m in body["messages"])


def _answer_estimate(reply: dict[str, Any]) -> int:
    choices = reply.get("choices")
    texts = [
        c["message"]["content"]
        for c in (choices if isinstance(choices, list) else [])
        if isinstance(c, dict)
        and isinstance(c.get("message"), dict)
        and isinstance(c["message"].get("content"), str)
    ]
    return sum(estimate_tokens(t) for t in texts)


@dataclass(slots=True)
class _Tally:
    prompt: int = 0
    completion: int = 0
    chunks: int = 0
    usage_seen: bool = False
    estimate: int = 0  # charged (plus one per streamed chunk) if the upstream reports no usage
    failed: bool = False  # an error ended the request

    def take(self, usage: object) -> None:
        """Read the upstream's usage; figures that are not counts a model could report (a
        negative or absurd one, a bool) count as not reported, with a warning."""
        if not isinstance(usage, dict):
            return
        p, c = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if _is_count(p) and _is_count(c):
            self.prompt, self.completion, self.usage_seen = p, c, True
        elif p is not None or c is not None:
            log.warning(
                "upstream usage ignored",
                extra={"fields": {"prompt_tokens": repr(p)[:40],
                                  "completion_tokens": repr(c)[:40]}},
            )

    @property
    def total(self) -> int:
        """The tokens to charge: none if an error ended the request before any output."""
        if self.usage_seen:
            return self.prompt + self.completion
        if self.failed and self.chunks == 0:
            return 0
        return self.estimate + self.chunks

    def usage(self) -> dict[str, int] | None:
        if not self.usage_seen:
            return None
        return {
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "total_tokens": self.prompt + self.completion,
        }


def _is_count(value: object) -> TypeGuard[int]:
    return type(value) is int and 0 <= value <= MAX_REPORTED_TOKENS


async def sealed_chat(
    request: web.Request, state: GatewayState, started: float
) -> web.StreamResponse:
    """Handle one `POST /v1/sealed/chat/completions`."""
    length = request.content_length  # size first, then type: the order docs/protocol.md gives
    if length is not None and length > state.config.max_body_bytes:
        raise PayloadTooLarge(f"the body is {length} bytes, over {state.config.max_body_bytes}")
    if request.content_type not in (REQUEST_CONTENT_TYPE, "application/octet-stream"):
        raise UnsupportedMediaType(f"send the envelope as {REQUEST_CONTENT_TYPE}")
    envelope = await request.read()
    admitted = await state.admission.admit(envelope, time.time())
    if admitted.chat.stream:
        return await _stream(request, state, admitted, started)
    return await _complete(request, state, admitted, started)


# Logged as the status of a request whose device left before any answer was sent (nginx's
# "client closed request"; nothing is sent with it).
_CLIENT_CLOSED = 499


def _cancelled_outcome(request: web.Request) -> str:
    """Why a handler is being cancelled: its device left, or the server is shutting down."""
    transport = request.transport
    return "client_disconnected" if transport is None or transport.is_closing() else "cancelled"


async def _complete(
    request: web.Request, state: GatewayState, admitted: Admitted, started: float
) -> web.Response:
    tally = _Tally(estimate=_prompt_estimate(admitted.chat.body))
    upstream_started = time.perf_counter()
    headers = {"Content-Type": RESPONSE_CONTENT_TYPE, "Cache-Control": "no-store"}
    try:
        reply: dict[str, Any] = await state.upstream.complete(admitted.chat.body)
        status, outcome = 200, "ok"
        tally.take(reply.get("usage"))
        tally.estimate += _answer_estimate(reply)
        plaintext = json.dumps(reply).encode()
        if len(plaintext) > _MAX_FRAME_PLAINTEXT:
            # Sealed, it would be a frame every device refuses: an answer nobody can read.
            # It was produced all the same, so its usage (or estimate) stays charged.
            oversized = UpstreamError(
                f"the upstream's answer is {len(plaintext)} bytes, over the "
                f"{_MAX_FRAME_PLAINTEXT}-byte frame limit"
            )
            plaintext, status, outcome = (
                json.dumps(oversized.to_body()).encode(), oversized.status, oversized.code)
    except UpstreamError as exc:
        tally.failed, tally.usage_seen = True, False  # nothing produced: nothing charged
        plaintext, status, outcome = json.dumps(exc.to_body()).encode(), exc.status, exc.code
        headers.update(_error_headers(exc))
    except asyncio.CancelledError:
        # Raised inside the upstream call, which closed its connection on the way out. The
        # upstream read the prompt: the prompt's estimate is charged.
        outcome = _cancelled_outcome(request)
        await _account(state, admitted, tally, outcome, _CLIENT_CLOSED, started, "complete")
        raise
    finally:
        state.metrics.upstream_latency.observe(time.perf_counter() - upstream_started)
    body = seal_response(admitted.response_key, plaintext)
    await _account(state, admitted, tally, outcome, status, started, "complete")
    return web.Response(body=body, status=status, headers=headers)


def _error_headers(exc: UpstreamError) -> dict[str, str]:
    """Plain headers for an upstream error answer (its body is sealed)."""
    if isinstance(exc, UpstreamRateLimited):
        return {"Retry-After": str(exc.retry_after_s)}
    return {}


async def _stream(
    request: web.Request, state: GatewayState, admitted: Admitted, started: float
) -> web.StreamResponse:
    sealer = FrameSealer(admitted.response_key)
    tally = _Tally(estimate=_prompt_estimate(admitted.chat.body))
    chunks = state.upstream.stream(admitted.chat.body)
    upstream_started = time.perf_counter()
    response = web.StreamResponse(
        headers={"Content-Type": STREAM_CONTENT_TYPE, "Cache-Control": "no-store"}
    )
    error: dict[str, Any] | None = None
    outcome, status = "ok", 200
    counted_elsewhere = False  # True: the error middleware counts this request's outcome
    try:
        # Wait for the first chunk before sending headers, so that an upstream that fails at
        # once gets its own status code rather than a 200 with an error trailer.
        try:
            first = await anext(chunks, None)
        except UpstreamError as exc:
            first, error, outcome, status = None, exc.to_body()["error"], exc.code, exc.status
            tally.failed = True
            response.headers.update(_error_headers(exc))
        response.set_status(status)
        await response.prepare(request)
        if error is None:
            try:
                if first is not None:
                    await _write_chunk(response, sealer, tally, first)
                    async for chunk in chunks:
                        await _write_chunk(response, sealer, tally, chunk)
            except UpstreamError as exc:  # mid-stream: the trailer says so, sealed
                # with the status the error would have had (the HTTP one is already 200)
                error, outcome = {**exc.to_body()["error"], "status": exc.status}, exc.code
                tally.failed = True
            except ConnectionError:  # the device went away: not a failure of ours
                raise
            except Exception:  # noqa: BLE001 - headers are sent: end the stream properly
                state.log.exception("stream failed", extra={"fields": {"path": request.path}})
                error, outcome = GatewayError("internal error").to_body()["error"], "internal_error"
                tally.failed = True
        trailer = {"usage": tally.usage(), "error": error}
        await response.write(sealer.seal(json.dumps(trailer).encode(), final=True))
        await response.write_eof()
    except ConnectionError:
        # Seen at a write after the device left; closing `chunks` (finally) ends the upstream
        # request, so the model stops generating for nobody.
        outcome = "client_disconnected"
    except asyncio.CancelledError:
        # The device left while the upstream was silent (before its first chunk, or between
        # two): the cancellation ended the upstream request where it waited.
        outcome = _cancelled_outcome(request)
        if not response.prepared:
            status = _CLIENT_CLOSED
        raise
    except Exception:
        # A bug outside the guarded chunk loop (an upstream raising before its first chunk):
        # the error middleware logs it, answers 500 and counts it; here it is only logged.
        outcome, status, tally.failed, counted_elsewhere = "internal_error", 500, True, True
        raise
    finally:
        await chunks.aclose()
        state.metrics.upstream_latency.observe(time.perf_counter() - upstream_started)
        await _account(state, admitted, tally, outcome, status, started, "stream",
                       counted=counted_elsewhere)
    return response


async def _write_chunk(
    response: web.StreamResponse, sealer: FrameSealer, tally: _Tally, chunk: bytes
) -> None:
    if len(chunk) > _MAX_FRAME_PLAINTEXT:  # a frame the device would refuse
        tally.chunks += 1  # produced all the same: charged
        raise UpstreamError(f"the upstream sent a chunk of {len(chunk)} bytes, over the "
                            f"{_MAX_FRAME_PLAINTEXT}-byte frame limit")
    tally.chunks += 1
    if b'"usage"' in chunk:
        # Not our business to validate the upstream's chunks beyond reading usage.
        with contextlib.suppress(ValueError, AttributeError):
            tally.take(json.loads(chunk).get("usage"))
    await response.write(sealer.seal(chunk))


P = ParamSpec("P")


def _runs_to_the_end(fn: Callable[P, Awaitable[None]]) -> Callable[P, Awaitable[None]]:
    """Make `fn` run to its end even if the calling handler is cancelled meanwhile (its
    device left), then pass the cancellation on: a charge is not dropped half-way."""

    @functools.wraps(fn)
    async def run(*args: P.args, **kwargs: P.kwargs) -> None:
        await finish_then_cancel(asyncio.ensure_future(fn(*args, **kwargs)))

    return run


@_runs_to_the_end
async def _account(
    state: GatewayState,
    admitted: Admitted,
    tally: _Tally,
    outcome: str,
    status: int,
    started: float,
    kind: str,
    *,
    counted: bool = False,
) -> None:
    """Charge and log a request that reached the upstream, even if the device leaves now
    (and count its outcome, unless `counted` says the error middleware does)."""
    # A store that cannot take the charge now (Redis down) gets it later: the limiter keeps it.
    await state.limiter.record(admitted.device_id, tally.total, time.time())
    metrics = state.metrics
    if not counted:
        metrics.requests.labels(outcome).inc()
    elapsed = time.perf_counter() - started
    metrics.latency.labels(kind).observe(elapsed)
    if tally.usage_seen:
        metrics.tokens.labels("prompt").inc(tally.prompt)
        metrics.tokens.labels("completion").inc(tally.completion)
    state.log.info(
        "served",
        extra={
            "fields": {
                "device": admitted.device_id,
                "key_id": admitted.key_id,
                "kind": kind,
                "outcome": outcome,
                "status": status,
                "ms": round(elapsed * 1000, 2),
                "prompt_tokens": tally.prompt,
                "completion_tokens": tally.completion,
            }
        },
    )
