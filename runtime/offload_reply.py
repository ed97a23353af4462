"""Reading the gateway's answers: opened frames into a `CloudReply` or text deltas and a
stream end; plain error answers into exceptions."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from runtime.errors import OffloadError
from runtime.offload_errors import GatewayRejected

_ERROR_BODY_LIMIT = 64 * 1024


class KeyRotated(Exception):
    """The gateway no longer holds the key we sealed to (421 unknown_key_id): refresh, reseal."""


class ClockSkew(Exception):
    """The gateway refused the envelope's timestamp (425 stale_timestamp) and said what time it
    is by its clock: reseal stamped by that clock. `local_time_ms` (the device's clock midway
    through the exchange) is filled in by the sender."""

    def __init__(self, message: str, gateway_time_ms: int) -> None:
        super().__init__(message)
        self.message = message
        self.gateway_time_ms = gateway_time_ms
        self.local_time_ms = 0


@dataclass(frozen=True, slots=True)
class CloudReply:
    """A whole answer from the cloud."""

    text: str
    model: str
    finish_reason: str
    usage: dict[str, int]
    timings: dict[str, float]  # seal_ms, first_byte_ms, total_ms
    key_id: str
    raw: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """The last item of a stream: what the trailer and the chunks said about the answer."""

    model: str
    finish_reason: str
    usage: dict[str, int]


class FrameReader:
    """Interprets the opened frames of one response (the frames are already authenticated)."""

    def __init__(self, stream: bool, key_id: str, timings: dict[str, float], started: float):
        self._stream = stream
        self._key_id = key_id
        self._timings = timings
        self._started = started
        self._model = ""
        self._finish = ""
        self._usage: dict[str, int] = {}

    def frame(
        self, plaintext: bytes, final: bool, status: int, retry_after_s: float | None = None
    ) -> Iterator[object]:
        """The items (text deltas, `StreamEnd`, `CloudReply`) one frame yields; `status` and
        `retry_after_s` are the answer's, for a sealed error (e.g. the upstream's 429)."""
        data = _json_object(plaintext)
        if not self._stream:
            if not final:
                raise OffloadError("the gateway streamed an answer that was not asked to stream")
            _raise_error(data, status, retry_after_s)
            yield self._reply(data)
            return
        if final:
            _raise_error(data, _trailer_status(data) or (status if status >= 400 else 502),
                         retry_after_s)
            self._usage = _usage(data.get("usage")) or self._usage
            self._timings["total_ms"] = _ms_since(self._started)
            yield StreamEnd(self._model, self._finish, self._usage)
            return
        self._model = str(data.get("model", self._model))
        self._usage = _usage(data.get("usage")) or self._usage
        for choice in data.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            if choice.get("finish_reason"):
                self._finish = str(choice["finish_reason"])
            delta = choice.get("delta")
            text = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(text, str) and text:
                yield text

    def _reply(self, data: dict[str, Any]) -> CloudReply:
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise OffloadError("the cloud answer has no choices[0].message.content") from None
        self._timings["total_ms"] = _ms_since(self._started)
        return CloudReply(
            text=str(text),
            model=str(data.get("model", "")),
            finish_reason=str(choice.get("finish_reason") or "stop"),
            usage=_usage(data.get("usage")),
            timings=dict(self._timings),
            key_id=self._key_id,
            raw=data,
        )


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _json_object(plaintext: bytes) -> dict[str, Any]:
    try:
        data = json.loads(plaintext)
    except ValueError:
        raise OffloadError("the sealed answer is not JSON") from None
    if not isinstance(data, dict):
        raise OffloadError("the sealed answer is not a JSON object")
    return data


def _trailer_status(data: dict[str, Any]) -> int | None:
    """The status a stream's trailer error carries (an HTTP status, 400..599), if any."""
    error = data.get("error")
    status = error.get("status") if isinstance(error, dict) else None
    return status if isinstance(status, int) and 400 <= status <= 599 else None


def _raise_error(data: dict[str, Any], status: int, retry_after_s: float | None) -> None:
    error = data.get("error")
    if error is None:
        return
    if isinstance(error, dict):
        code, message = str(error.get("code", "upstream_error")), str(error.get("message", ""))
    else:
        code, message = "upstream_error", str(error)
    raise GatewayRejected(status, code, message, retry_after_s=retry_after_s)


def _usage(value: object) -> dict[str, int]:
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, int)}


def rejection(resp: httpx.Response) -> Exception:
    """A plain (unsealed) error answer as an exception; 421 unknown_key_id -> `KeyRotated`,
    425 stale_timestamp with the gateway's clock -> `ClockSkew`."""
    raw = b""
    for chunk in resp.iter_bytes():
        raw += chunk
        if len(raw) > _ERROR_BODY_LIMIT:
            break
    code, message = f"http_{resp.status_code}", resp.reason_phrase
    error: Any = None
    try:
        error = json.loads(raw)["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        pass
    if resp.status_code == 421 and code == "unknown_key_id":
        return KeyRotated()
    if resp.status_code == 425 and code == "stale_timestamp" and isinstance(error, dict):
        gateway_time = error.get("gateway_time_ms")
        if isinstance(gateway_time, int) and not isinstance(gateway_time, bool):
            return ClockSkew(message, gateway_time)
    return GatewayRejected(resp.status_code, code, message, retry_after_s=retry_after_s(resp))


def retry_after_s(resp: httpx.Response) -> float | None:
    """The answer's Retry-After in seconds, None when absent or not a number."""
    retry_after = resp.headers.get("retry-after")
    try:
        return float(retry_after) if retry_after else None
    except ValueError:
        return None
