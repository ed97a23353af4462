"""Helpers every engine shares: thread count, sampling seeds, base-model transcripts, stop
strings."""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence

from kernels.base import Message
from kernels.errors import ContextOverflowError


def default_threads() -> int:
    """One thread per core available to this process (llama.cpp gains nothing from SMT)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def sampling_seed(request_seed: int | None, engine_seed: int | None) -> int:
    """The seed one generation samples with: the request's own seed, else the engine's
    configured one (`model.seed`: every such request samples alike), else a fresh random
    32-bit seed, so that repeating a request draws a new sample (as OpenAI's API does when
    a request has no `seed`). Greedy decoding does not depend on it."""
    if request_seed is not None:
        return request_seed
    if engine_seed is not None:
        return engine_seed
    return secrets.randbits(32)


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


class StopText:
    """An answer's text as it is decoded, cut at the first stop string.

    `add()` returns the part that is safe to show: text that could still be the start of a
    stop string is held back until a later piece settles it, and `rest()` hands out what
    is left at the end. Engines yield one event per token, possibly with empty text.
    """

    __slots__ = ("stops", "text", "stopped", "_hold", "_emitted")

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.text = ""
        self.stopped = False  # a stop string was found; `text` ends before it
        self._hold = max((len(s) for s in stops), default=1) - 1
        self._emitted = 0  # characters of `text` already handed out

    def add(self, piece: str) -> str:
        """Append a decoded piece; return the newly safe text ('' while holding back)."""
        self.text += piece
        cut = find_stop(self.text, self.stops, self._emitted)
        if cut is not None:
            self.text = self.text[:cut]
            self.stopped = True
        safe = len(self.text) if self.stopped else max(self._emitted, len(self.text) - self._hold)
        out = self.text[self._emitted:safe]
        self._emitted = safe
        return out

    def rest(self, tail: str = "") -> str:
        """Append a last piece (if any) and return everything not handed out yet."""
        self.text += tail
        out = self.text[self._emitted:]
        self._emitted = len(self.text)
        return out
