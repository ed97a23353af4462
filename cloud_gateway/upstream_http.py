"""An OpenAI-compatible upstream over HTTP: vLLM, llama.cpp server, Ollama, a hosted API."""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from collections.abc import AsyncGenerator, AsyncIterable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
from aiohttp.http_exceptions import LineTooLong

from cloud_gateway.errors import (
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRefusedRequest,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from cloud_gateway.protocol.frames import MAX_FRAME_BYTES

# Upstream statuses that mean "this request is wrong" (bad field, unknown model, too long a
# prompt): the device's request is refused, the cloud itself is fine.
_REQUEST_FAULTS = (400, 404, 413, 422)
_DEFAULT_RETRY_AFTER_S = 1  # an upstream 429 without a usable Retry-After
_MAX_RETRY_AFTER_S = 3600


class HttpUpstream:
    """Forwards chat requests to `base_url` (e.g. `http://127.0.0.1:8000/v1`).

    `timeout_s` bounds a whole answer, but for a stream the wait for the first chunk and
    between two chunks (a stream may last as long as it keeps sending).

    The API key is read from the environment variable named `api_key_env`, never from a file
    or a flag, so it does not end up in shell history or process listings.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key_env: str = "TANDEM_UPSTREAM_API_KEY",
        timeout_s: float = 120.0,
        connect_timeout_s: float = 5.0,
        max_connections: int = 256,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(
            total=timeout_s, connect=connect_timeout_s, sock_connect=connect_timeout_s
        )
        # A stream may run for longer than timeout_s in all: only a silence that long ends it.
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None,
            connect=connect_timeout_s,
            sock_connect=connect_timeout_s,
            sock_read=timeout_s,
        )
        self._max_connections = max_connections
        api_key = os.environ.get(api_key_env, "") if api_key_env else ""
        self._api_key = api_key
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Created on first use so that it binds to the running event loop.
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, headers=self._headers
            )
        return self._session

    async def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        """POST /chat/completions and return the parsed completion."""
        payload = json.dumps({**request, "stream": False}).encode()
        try:
            async with self._client().post(f"{self._base}/chat/completions", data=payload) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    raise _upstream_error(resp.status, raw, resp.headers, self._api_key)
        except TimeoutError:
            raise UpstreamTimeout("the upstream did not answer in time") from None
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailable(f"upstream unreachable: {type(exc).__name__}") from None
        try:
            data = json.loads(raw)
        except ValueError:
            raise UpstreamError("the upstream answered with invalid JSON") from None
        if not isinstance(data, dict):
            raise UpstreamError("the upstream answered with a non-object")
        return data

    async def stream(self, request: dict[str, Any]) -> AsyncGenerator[bytes, None]:
        """POST a streamed request and yield each SSE `data:` payload until `[DONE]`.

        A stream that ends before `[DONE]`, an `{"error": ...}` payload and a body that is
        neither `text/event-stream` nor JSON raise `UpstreamError`; a JSON `chat.completion`
        (an upstream that ignores `stream`) is yielded as one chunk."""
        body = {**request, "stream": True, "stream_options": {"include_usage": True}}
        try:
            async with self._client().post(
                f"{self._base}/chat/completions",
                data=json.dumps(body).encode(),
                timeout=self._stream_timeout,
            ) as resp:
                if resp.status >= 400:
                    raw = await resp.read()
                    raise _upstream_error(resp.status, raw, resp.headers, self._api_key)
                if resp.content_type == "application/json":
                    # It ignored stream:true but answered: deliver the answer as one chunk.
                    raw = await resp.read()
                    _raise_stream_error(raw, self._api_key)
                    yield _as_chunk(raw)
                    return
                if resp.content_type != "text/event-stream":
                    raise UpstreamError(
                        "the upstream answered a stream request with "
                        f"{resp.content_type or 'no content type'}, not text/event-stream"
                    )
                async for data in _sse_events(resp.content):
                    if data == b"[DONE]":
                        return
                    if b'"error"' in data:  # cheap test first: most chunks are not errors
                        _raise_stream_error(data, self._api_key)
                    yield data
                raise UpstreamError("the upstream stream ended before its data: [DONE]")
        except TimeoutError:
            raise UpstreamTimeout("the upstream stream timed out") from None
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailable(f"upstream stream failed: {type(exc).__name__}") from None
        except (ValueError, LineTooLong):  # aiohttp's line reader refuses lines over its
            # limit: ValueError in older releases, LineTooLong (not a ValueError) since 3.10
            raise UpstreamError("the upstream sent an invalid stream line") from None

    async def ready(self) -> tuple[bool, str]:
        """GET /models with a short timeout: reachable, accepting our key, and answering 2xx."""
        try:
            async with self._client().get(
                f"{self._base}/models", timeout=aiohttp.ClientTimeout(total=3.0)
            ) as resp:
                await resp.read()
                if resp.status in (401, 403):
                    return False, f"upstream rejects the API key ({resp.status})"
                if not 200 <= resp.status < 300:
                    reason = f"upstream answers {resp.status} to GET /models"
                    if resp.status == 404:  # most often a base URL without its /v1
                        reason += " (does upstream_url end in /v1?)"
                    return False, reason
                return True, ""
        except (TimeoutError, aiohttp.ClientError) as exc:
            return False, f"upstream unreachable: {type(exc).__name__}"

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
            await asyncio.sleep(0)  # let the connector close its sockets


async def _sse_events(lines: AsyncIterable[bytes]) -> AsyncGenerator[bytes, None]:
    """The data of each server-sent event: its `data:` lines joined with "\n", delivered at
    the blank line that ends the event (WHATWG HTML, "Server-sent events"), so that an event
    split over several lines is one chunk. Comments and other fields are skipped; an event
    the stream ends in without its blank line is delivered too."""
    parts: list[bytes] = []
    size = 0
    async for raw in lines:
        line = raw.rstrip(b"\r\n")
        if not line:
            if parts:
                yield b"\n".join(parts)
                parts, size = [], 0
            continue
        name, colon, value = line.partition(b":")
        if name != b"data":
            continue  # comments (":..."), event, id, retry
        if colon and value.startswith(b" "):
            value = value[1:]
        size += len(value) + 1
        if size > MAX_FRAME_BYTES:  # no frame could carry it: do not hold it in memory
            raise UpstreamError("the upstream sent a stream event over the frame limit")
        parts.append(value.strip())
    if parts:
        yield b"\n".join(parts)


def _upstream_error(
    status: int, raw: bytes, headers: Mapping[str, str], api_key: str
) -> UpstreamError:
    """The gateway's error for an upstream error answer: the request's fault (400), the
    upstream's rate limit (429), a refused API key or anything else (502)."""
    if status in (401, 403):
        # Its message may quote part of the key: not passed on.
        return UpstreamAuthFailed(
            f"the upstream refused the gateway's API key ({status}); "
            "check the gateway's upstream_api_key_env",
            upstream_status=status,
        )
    message = f"upstream answered {status}"
    try:
        error = json.loads(raw).get("error", {})
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            message = f"{message}: {error['message'][:200]}"
    except (ValueError, AttributeError):
        pass
    if api_key:
        message = message.replace(api_key, "[redacted]")
    if status in _REQUEST_FAULTS:
        return UpstreamRefusedRequest(message, upstream_status=status)
    if status == 429:
        return UpstreamRateLimited(message, _retry_after_s(headers.get("Retry-After", "")))
    return UpstreamError(message, upstream_status=status)


def _raise_stream_error(data: bytes, api_key: str) -> None:
    """Raise if this payload is an error object (`{"error": ...}`) rather than a chunk."""
    try:
        payload = json.loads(data)
    except ValueError:
        return  # not ours to validate; the device reads what it can
    if not isinstance(payload, dict) or payload.get("error") is None:
        return
    error = payload["error"]
    detail = error.get("message") if isinstance(error, dict) else error
    message = f"the upstream stream failed: {str(detail)[:200]}"
    if api_key:
        message = message.replace(api_key, "[redacted]")
    # vLLM and others put an HTTP-like status in the payload: a request fault stays one
    code = error.get("code") if isinstance(error, dict) else None
    status = int(code) if isinstance(code, int | str) and str(code).isdigit() else None
    if status in _REQUEST_FAULTS:
        raise UpstreamRefusedRequest(message, upstream_status=status)
    raise UpstreamError(message, upstream_status=status)


def _as_chunk(raw: bytes) -> bytes:
    """A whole `chat.completion` (JSON bytes) as one `chat.completion.chunk`."""
    try:
        data = json.loads(raw)
        choices = [
            {
                "index": c.get("index", 0),
                "delta": c["message"],
                "finish_reason": c.get("finish_reason"),
            }
            for c in data["choices"]
        ]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UpstreamError(
            "the upstream answered a stream request with JSON that is not a chat completion"
        ) from None
    chunk = {**data, "object": "chat.completion.chunk", "choices": choices}
    return json.dumps(chunk).encode()


def _retry_after_s(value: str) -> int:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), bounded."""
    value = value.strip()
    seconds: float
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError):
            seconds = _DEFAULT_RETRY_AFTER_S
    if not math.isfinite(seconds):
        seconds = _DEFAULT_RETRY_AFTER_S
    return int(min(max(math.ceil(seconds), 1), _MAX_RETRY_AFTER_S))
