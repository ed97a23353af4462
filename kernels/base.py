"""The one seam between Tandem and a model runtime: the `Engine` protocol.

An engine turns a prompt into a stream of `TokenEvent`s, each carrying the log-probability
of the chosen token and the entropy of that step's full distribution: the raw material of
the runtime's confidence score. Everything else (policy, privacy, the network) lives above.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "cancelled"]
# A UTF-16 surrogate on its own: JSON's "\ud800" escape, or undecodable bytes in a command
# line (Python's surrogateescape). No tokenizer can encode it.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def check_text(text: str, what: str) -> None:
    """Raise ValueError if `text` is not valid Unicode (holds a lone surrogate)."""
    m = _LONE_SURROGATE.search(text)
    if m is not None:
        code = ord(m.group())
        byte = (f" (byte 0x{code - 0xDC00:02X}, not UTF-8, as Python reads an undecodable "
                "file or command line)" if 0xDC80 <= code <= 0xDCFF else "")
        raise ValueError(f"{what} is not valid Unicode text: a lone surrogate "
                         f"U+{code:04X}{byte} at character {m.start()}")


@dataclass(frozen=True, slots=True)
class Message:
    """One chat turn."""

    role: Role
    content: str

    def __post_init__(self) -> None:
        check_text(self.content, "message content")

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Message:
        """A turn in OpenAI's shape: `content` a string or a list of text parts
        (`{"type": "text", "text": ...}`, joined by newlines); role `developer` is OpenAI's
        newer name for `system`."""
        role = data.get("role")
        if role == "developer":
            role = "system"
        if role not in ("system", "user", "assistant"):
            raise ValueError(f"message role must be system, user or assistant, not {role!r}")
        name = data.get("name")  # OpenAI's participant name: accepted, not used
        if name is not None and not isinstance(name, str):
            raise ValueError(f"message name must be a string, not {type(name).__name__}")
        return cls(role=role, content=_content(data.get("content")))

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


def _content(content: object) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list) or not content:
        raise ValueError("message content must be a string or a non-empty list of text parts")
    texts = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != "text":
            raise ValueError(
                f"message content part {i} is {kind!r}: only text parts are supported"
                if kind is not None else f"message content part {i} must be an object with a type"
            )
        text = part.get("text")
        if not isinstance(text, str):
            raise ValueError(f"message content part {i} must have a string text")
        texts.append(text)
    return "\n".join(texts)


@dataclass(frozen=True, slots=True)
class TokenEvent:
    """One generated token.

    `logprob` is the natural-log probability of `token_id` under the model's full
    distribution at that step (before temperature / top-p); `entropy` is that
    distribution's entropy in nats. Engines that cannot see the distribution set both
    to NaN (and say so through `Engine.info.has_logprobs`).
    """

    text: str
    token_id: int
    logprob: float
    entropy: float


@dataclass(frozen=True, slots=True)
class GenerationParams:
    """Sampling and stopping parameters. temperature 0 means greedy; so does top_p 0 (only
    the likeliest token is kept: OpenAI accepts 0), stored as temperature 0, top_p 1."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        if not (_is_finite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"temperature must be a finite number >= 0, not {self.temperature!r}")
        if not 0 <= self.top_p <= 1:
            raise ValueError(f"top_p must be between 0 and 1, not {self.top_p!r}")
        if self.top_p == 0:
            object.__setattr__(self, "temperature", 0.0)
            object.__setattr__(self, "top_p", 1.0)
        if "" in self.stop:
            raise ValueError("stop strings must not be empty")
        for text in self.stop:
            check_text(text, "stop string")


def _is_finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True, slots=True)
class Generation:
    """A finished generation: the text, every token event, why it stopped, usage."""

    text: str
    tokens: tuple[TokenEvent, ...]
    finish_reason: FinishReason
    usage: Usage


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What a loaded model is."""

    id: str
    path: str
    engine: str
    context_length: int
    chat: bool
    has_logprobs: bool = True
    extra: dict[str, str] = field(default_factory=dict)


Prompt = str | Sequence[Message]
"""A raw completion prompt (str) or chat messages to render with the model's template."""


class TokenStream(Iterator[TokenEvent]):
    """An iterator of token events; `finish_reason` and `usage` are set once it is exhausted.

    Engines subclass it (or wrap a generator in it). `cancel()` may be called from any
    thread; the stream then ends after the token being decoded, with reason "cancelled".
    """

    def __init__(self, events: Iterator[TokenEvent], cancel: threading.Event | None = None):
        self._events = events
        self.cancel_event = cancel if cancel is not None else threading.Event()
        self.finish_reason: FinishReason | None = None
        self.usage: Usage | None = None

    def __iter__(self) -> TokenStream:
        return self

    def __next__(self) -> TokenEvent:
        return next(self._events)

    def cancel(self) -> None:
        self.cancel_event.set()

    def pace(self, seconds: float) -> None:
        """Hint that the consumer takes events at most every `seconds` (0: at once).

        A consumer that batches its output anyway (an HTTP stream flushing every few tens
        of milliseconds) lets an engine that decodes on its own thread hand tokens over in
        batches, saving a thread wakeup per token. The first event is never held back, nor
        the last. Engines without such a thread ignore it.
        """
        if seconds < 0:
            raise ValueError("pace must be >= 0 seconds")
        pace = getattr(self._events, "pace", None)
        if pace is not None:
            pace(seconds)

    def close(self) -> None:
        """Abandon the stream now, releasing the engine (idempotent)."""
        self.cancel_event.set()
        close = getattr(self._events, "close", None)
        if close is not None:
            close()

    def finish(self, reason: FinishReason, usage: Usage) -> None:
        self.finish_reason = reason
        self.usage = usage


@runtime_checkable
class Engine(Protocol):
    """A loaded model. Implementations: `kernels.llama_cpp_engine.LlamaCppEngine`, ..."""

    @property
    def info(self) -> ModelInfo: ...

    def render(self, prompt: Prompt) -> str:
        """The exact text fed to the model: chat template for chat models, plain for base."""
        ...

    def count_tokens(self, text: str) -> int: ...

    def stream(
        self,
        prompt: Prompt,
        params: GenerationParams,
        cancel: threading.Event | None = None,
    ) -> TokenStream: ...

    def close(self) -> None: ...


def collect(stream: TokenStream) -> Generation:
    """Drain a token stream into a `Generation`."""
    events = tuple(stream)
    assert stream.finish_reason is not None and stream.usage is not None
    return Generation(
        text="".join(e.text for e in events),
        tokens=events,
        finish_reason=stream.finish_reason,
        usage=stream.usage,
    )


def generate(
    engine: Engine,
    prompt: Prompt,
    params: GenerationParams | None = None,
    cancel: threading.Event | None = None,
) -> Generation:
    """Run a whole generation on `engine` and collect it."""
    return collect(engine.stream(prompt, params or GenerationParams(), cancel))
