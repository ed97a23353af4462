"""The `Runtime` facade: one call from messages to a `Result` that says where and why.

    rt = Runtime.from_config(load_config())
    result = rt.generate([{"role": "user", "content": "Hi"}], mode="local-only")
    for piece in (stream := rt.stream(messages)):
        print(piece, end="")
    stream.result  # the Result, once the stream is exhausted

Thread-safe: the HTTP API calls it from worker threads. The local engine runs one
generation at a time; at most `runtime.queue_size` further requests wait for it, beyond
which `QueueFullError` is raised at call time (before any token).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from kernels import Engine, FinishReason, GenerationParams, Message, TokenEvent, Usage
from kernels.registry import load_engine
from runtime.confidence import Confidence, RunningConfidence
from runtime.config import MODES, Mode, TandemConfig
from runtime.errors import ModeError, QueueFullError
from runtime.monitor import Monitor
from runtime.result import Result, Timings

MessagesLike = Sequence[Message | Mapping[str, Any]]


def to_messages(messages: MessagesLike) -> list[Message]:
    """Validate chat messages given as `Message`s or OpenAI-style dicts."""
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise ValueError("messages must be a list of {role, content} objects")
    if not messages:
        raise ValueError("messages must not be empty")
    out = []
    for i, m in enumerate(messages):
        if isinstance(m, Message):
            out.append(m)
            continue
        if not isinstance(m, Mapping):
            raise ValueError(f"messages[{i}] must be an object with role and content")
        try:
            out.append(Message.from_dict(dict(m)))
        except ValueError as exc:
            raise ValueError(f"messages[{i}]: {exc}") from None
    return out


class ResultStream(Iterator[str]):
    """Text deltas of an answer as they are produced; `result` is set once exhausted.

    `cancel()` (any thread) stops generation after the current token; `close()` releases the
    engine at once. Iterating to the end, or closing, is required to free the queue slot.
    """

    def __init__(
        self, pieces: Iterator[str], cancel: threading.Event, slot: _Slot | None = None
    ) -> None:
        self._pieces = pieces
        self._cancel = cancel
        self._slot = slot
        self.result: Result | None = None

    def __iter__(self) -> ResultStream:
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    def cancel(self) -> None:
        self._cancel.set()

    def close(self) -> None:
        self._cancel.set()
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()
        if self._slot is not None:
            self._slot.release()  # a stream closed before its first token never ran its finally

    def collect(self) -> Result:
        for _ in self:
            pass
        assert self.result is not None
        return self.result


class _Slot:
    """One admitted request's place in the local queue; release is idempotent."""

    __slots__ = ("_runtime", "_held")

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._held = True

    def release(self) -> None:
        with self._runtime._admit_lock:
            if self._held:
                self._held = False
                self._runtime._admitted -= 1


class Runtime:
    """The device side of Tandem."""

    def __init__(
        self,
        config: TandemConfig,
        *,
        engine: Engine | None = None,
        monitor: Monitor | None = None,
    ) -> None:
        self.config = config
        # Called with every finished Result (telemetry, tests); must be quick and not raise.
        self.listeners: list[Callable[[Result], None]] = []
        self._engine = engine
        self._engine_lock = threading.Lock()  # serialises local generations
        self._load_lock = threading.Lock()
        self._admitted = 0
        self._admit_lock = threading.Lock()
        self.monitor = monitor or Monitor.from_config(config.monitor)

    @classmethod
    def from_config(cls, config: TandemConfig) -> Runtime:
        return cls(config)

    # -- resources -----------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The local engine, loaded on first use."""
        if self._engine is None:
            with self._load_lock:
                if self._engine is None:
                    m = self.config.model
                    self._engine = load_engine(
                        m.spec,
                        threads=m.threads,
                        context_length=m.context_length,
                        seed=m.seed,
                        cache_dir=m.cache_dir or None,
                    )
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
        self.monitor.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def queue_depth(self) -> int:
        """Local requests admitted and not finished (running + waiting)."""
        with self._admit_lock:
            return self._admitted

    def params(self, **overrides: Any) -> GenerationParams:
        """Generation parameters from config, with per-request overrides (None = default)."""
        g = self.config.generation
        values: dict[str, Any] = {
            "max_tokens": g.max_tokens,
            "temperature": g.temperature,
            "top_p": g.top_p,
            "seed": self.config.model.seed,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        if isinstance(values.get("stop"), str):
            values["stop"] = (values["stop"],)
        if "stop" in values:
            values["stop"] = tuple(values["stop"])
        return GenerationParams(**values)

    # -- the two calls ---------------------------------------------------------------------

    def generate(
        self,
        messages: MessagesLike,
        *,
        mode: str | None = None,
        params: GenerationParams | None = None,
        cancel: threading.Event | None = None,
    ) -> Result:
        """Answer `messages`; see `stream` for the arguments."""
        return self.stream(messages, mode=mode, params=params, cancel=cancel).collect()

    def stream(
        self,
        messages: MessagesLike,
        *,
        mode: str | None = None,
        params: GenerationParams | None = None,
        cancel: threading.Event | None = None,
    ) -> ResultStream:
        """Start answering `messages` and return a stream of text deltas.

        Validation, mode checks and queue admission happen here, before the first token:
        `ValueError` (bad messages), `ModeError`, `QueueFullError`, `ContextOverflowError`.
        """
        msgs = to_messages(messages)
        chosen = self._mode(mode)
        params = params or self.params()
        cancel = cancel or threading.Event()
        started = time.perf_counter()
        if chosen in ("prefer-cloud", "cloud-only"):
            raise ModeError(
                f"mode {chosen} needs a cloud gateway, and no gateway is configured "
                "(set [gateway] url in the config or TANDEM_GATEWAY_URL)"
            )
        reason = (
            "mode local-only: the device answers"
            if chosen == "local-only"
            else "mode prefer-local: the device answers; no gateway configured to escalate to"
        )
        slot = self._admit()
        try:
            engine = self.engine
            tokens = engine.stream(msgs, params, cancel)  # tokenises now: overflow raises here
        except BaseException:
            slot.release()
            raise
        stream = ResultStream(iter(()), cancel, slot)
        stream._pieces = self._run_local(stream, slot, tokens, chosen, reason, started)
        return stream

    # -- internals --------------------------------------------------------------------------

    def _mode(self, mode: str | None) -> Mode:
        chosen = mode or self.config.runtime.mode
        if chosen not in MODES:
            raise ModeError(f"unknown mode {chosen!r} (one of {', '.join(MODES)})")
        return chosen  # type: ignore[return-value]

    def _admit(self) -> _Slot:
        with self._admit_lock:
            # one running + queue_size waiting
            if self._admitted >= self.config.runtime.queue_size + 1:
                raise QueueFullError(
                    f"the local engine's queue is full ({self.config.runtime.queue_size} waiting)"
                )
            self._admitted += 1
        return _Slot(self)

    def _run_local(
        self,
        stream: ResultStream,
        slot: _Slot,
        tokens: Iterator[TokenEvent],
        mode: Mode,
        reason: str,
        started: float,
    ) -> Iterator[str]:
        running = RunningConfidence()
        first: float | None = None
        parts: list[str] = []
        try:
            with self._engine_lock:
                got_engine = time.perf_counter()
                for event in tokens:
                    running.add(event)
                    if event.text:
                        if first is None:
                            first = time.perf_counter()
                        parts.append(event.text)
                        yield event.text
                done = time.perf_counter()
        finally:
            close = getattr(tokens, "close", None)
            if close is not None:
                close()
            slot.release()
        token_stream: Any = tokens
        usage: Usage = token_stream.usage or Usage(0, 0)
        finish: FinishReason = token_stream.finish_reason or "cancelled"
        first = first or done
        decode_s = done - first
        rate = (usage.completion_tokens - 1) / decode_s if decode_s > 0 else 0.0
        stream.result = Result(
            text="".join(parts),
            source="local",
            reason=reason,
            confidence=running.value(),
            usage=usage,
            timings=Timings(
                queued_ms=(got_engine - started) * 1e3,
                ttft_ms=(first - started) * 1e3,
                total_ms=(done - started) * 1e3,
                tokens_per_s=rate,
            ),
            resources=self.monitor.snapshot(),
            finish_reason=finish,
            model=self.engine.info.id,
            mode=mode,
        )
        for listener in self.listeners:
            listener(stream.result)


__all__ = ["Confidence", "ResultStream", "Runtime", "to_messages"]
