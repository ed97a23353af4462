"""The decrypted request: validated as an OpenAI chat-completions body before it goes upstream.

Only known fields are forwarded, so a device cannot smuggle upstream-specific options
(tools, logit biases, n > 1) past the gateway's accounting.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cloud_gateway.errors import InvalidChatRequest

_ROLES = ("system", "user", "assistant")
_NUMBERS = {"temperature": (0.0, 2.0), "top_p": (0.0, 1.0)}


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A chat request fit to forward: `body` holds only the fields the gateway allows."""

    body: dict[str, Any]
    stream: bool
    max_tokens: int


def parse_chat_request(raw: bytes, *, max_tokens_cap: int, model: str = "") -> ChatRequest:
    """Validate and normalise `raw` (JSON bytes); `InvalidChatRequest` says what is wrong."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: deep nesting
        raise InvalidChatRequest("the sealed request is not JSON") from None
    if not isinstance(data, dict):
        raise InvalidChatRequest("the sealed request is not a JSON object")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidChatRequest("messages must be a non-empty list")
    clean: list[dict[str, str]] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            raise InvalidChatRequest(f"messages[{i}].role must be one of {', '.join(_ROLES)}")
        if not isinstance(m.get("content"), str):
            raise InvalidChatRequest(f"messages[{i}].content must be a string")
        clean.append({"role": m["role"], "content": m["content"]})
    max_tokens = data.get("max_tokens", data.get("max_completion_tokens", max_tokens_cap))
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise InvalidChatRequest("max_tokens must be a positive integer")
    max_tokens = min(max_tokens, max_tokens_cap)
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidChatRequest("stream must be true or false")
    requested_model = data.get("model", "")
    if not isinstance(requested_model, str):
        raise InvalidChatRequest("model must be a string")
    body: dict[str, Any] = {
        "model": model or requested_model or "default",
        "messages": clean,
        "max_tokens": max_tokens,
        "stream": stream,
    }
    for name, (low, high) in _NUMBERS.items():
        if name in data:
            value = data[name]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidChatRequest(f"{name} must be a number")
            if not low <= value <= high:
                raise InvalidChatRequest(f"{name} must be within [{low}, {high}]")
            body[name] = value
    if "seed" in data:
        if isinstance(data["seed"], bool) or not isinstance(data["seed"], int):
            raise InvalidChatRequest("seed must be an integer")
        body["seed"] = data["seed"]
    if "stop" in data:
        stop = data["stop"]
        stops = [stop] if isinstance(stop, str) else stop
        if (
            not isinstance(stops, list)
            or len(stops) > 4
            or not all(isinstance(s, str) for s in stops)
        ):
            raise InvalidChatRequest("stop must be a string or a list of up to 4 strings")
        body["stop"] = stops
    return ChatRequest(body=body, stream=stream, max_tokens=max_tokens)
