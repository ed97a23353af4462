"""Helpers every engine shares: thread count, base-model transcripts, stop strings."""

from __future__ import annotations

import os
from collections.abc import Sequence

from kernels.base import Message
from kernels.errors import ContextOverflowError


def default_threads() -> int:
    """One thread per core available to this process (llama.cpp gains nothing from SMT)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def check_context(prompt_tokens: int, context_length: int) -> None:
    """Refuse a prompt that leaves no room in the context for even one new token."""
    if prompt_tokens >= context_length:
        raise ContextOverflowError(prompt_tokens, context_length)


def render_transcript(messages: Sequence[Message]) -> str:
    """Completion prompting for base models: a plain transcript ending in the assistant's turn."""
    names = {"system": "System", "user": "User", "assistant": "Assistant"}
    lines = [f"{names[m.role]}: {m.content.strip()}" for m in messages]
    return "\n".join(lines) + "\nAssistant:"


def find_stop(text: str, stops: tuple[str, ...], emitted: int) -> int | None:
    """Index where the earliest stop string starts in `text`, searching only new text."""
    best: int | None = None
    for stop in stops:
        start = max(0, emitted - len(stop) + 1)
        idx = text.find(stop, start)
        if idx != -1 and (best is None or idx < best):
            best = idx
    return best
