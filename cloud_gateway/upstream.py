"""The seam to whatever runs the model: an embedded `kernels` engine or an OpenAI-compatible URL.

Both speak OpenAI chat-completions: `complete` returns a `chat.completion` object, `stream`
yields the JSON bytes of each `chat.completion.chunk` (the last one carrying `usage`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, Protocol


class Upstream(Protocol):
    """A model server. Implementations: `EngineUpstream`, `HttpUpstream`."""

    async def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer a non-streamed chat request."""
        ...

    def stream(self, request: dict[str, Any]) -> AsyncGenerator[bytes, None]:
        """Answer a streamed chat request, one chunk's JSON bytes at a time."""
        ...

    async def ready(self) -> tuple[bool, str]:
        """(True, "") when the upstream can take requests, else (False, why)."""
        ...

    async def close(self) -> None: ...
