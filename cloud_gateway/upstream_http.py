"""An OpenAI-compatible upstream over HTTP: vLLM, llama.cpp server, Ollama, a hosted API."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncGenerator
from typing import Any

import aiohttp

from cloud_gateway.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable


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
                    raise _upstream_error(resp.status, raw)
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
        """POST a streamed request and yield each SSE `data:` payload until `[DONE]`."""
        body = {**request, "stream": True, "stream_options": {"include_usage": True}}
        try:
            async with self._client().post(
                f"{self._base}/chat/completions",
                data=json.dumps(body).encode(),
                timeout=self._stream_timeout,
            ) as resp:
                if resp.status >= 400:
                    raise _upstream_error(resp.status, await resp.read())
                async for line in resp.content:
                    line = line.strip()
                    if not line.startswith(b"data:"):
                        continue  # SSE comments, event names, blank separators
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        return
                    yield data
        except TimeoutError:
            raise UpstreamTimeout("the upstream stream timed out") from None
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailable(f"upstream stream failed: {type(exc).__name__}") from None
        except ValueError:  # aiohttp's line reader refuses lines over its buffer size
            raise UpstreamError("the upstream sent an invalid stream line") from None

    async def ready(self) -> tuple[bool, str]:
        """GET /models with a short timeout: reachable and accepting our key."""
        try:
            async with self._client().get(
                f"{self._base}/models", timeout=aiohttp.ClientTimeout(total=3.0)
            ) as resp:
                await resp.read()
                if resp.status in (401, 403):
                    return False, f"upstream rejects the API key ({resp.status})"
                if resp.status >= 500:
                    return False, f"upstream answers {resp.status}"
                return True, ""
        except (TimeoutError, aiohttp.ClientError) as exc:
            return False, f"upstream unreachable: {type(exc).__name__}"

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
            await asyncio.sleep(0)  # let the connector close its sockets


def _upstream_error(status: int, raw: bytes) -> UpstreamError:
    message = f"upstream answered {status}"
    try:
        error = json.loads(raw).get("error", {})
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            message = f"{message}: {error['message'][:200]}"
    except (ValueError, AttributeError):
        pass
    return UpstreamError(message, upstream_status=status)
