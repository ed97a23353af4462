"""One local generation on the runtime's engine: pieces, running confidence, its Result."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from kernels import FinishReason, GenerationParams, Message, TokenStream, Usage
from runtime.cloud import Prepared
from runtime.confidence import Confidence, RunningConfidence
from runtime.monitor.snapshot import Snapshot
from runtime.request import CancelEvent
from runtime.result import Result, Timings

if TYPE_CHECKING:
    from runtime.config import Mode
    from runtime.facade import Runtime


# How often a request waiting for the engine looks at its cancel flag (seconds).
ENGINE_WAIT_POLL_S = 0.05


class LocalPiece(str):
    """A piece of a local answer's text, with the tokens it completes: (text, log-prob) of
    each model step since the previous piece, as `Result.token_logprobs` lists them. A step
    whose text a stop string held back has empty text and rides with a later piece; text
    released when the answer ends joins the step before it (or, when that step's piece has
    gone already, comes with no token). Empty where the engine gives no log-probs."""

    tokens: tuple[tuple[str, float], ...]

    def __new__(cls, text: str, tokens: tuple[tuple[str, float], ...] = ()) -> LocalPiece:
        piece = super().__new__(cls, text)
        piece.tokens = tokens
        return piece


class LocalRun:
    """A local generation. `pieces()` holds the engine while it runs.

    Two ways to stop it: the caller's `cancel` event (the user went away) and `cancel()`
    (the runtime decided to escalate); `cancelled_by_user` tells them apart.
    """

    def __init__(self, runtime: Runtime, tokens: TokenStream, stop: threading.Event,
                 user_cancel: threading.Event, prefix: str) -> None:
        self._runtime = runtime
        self._tokens = tokens
        self._stop = stop
        self._user_cancel = user_cancel
        self._prefix = prefix
        self._running = RunningConfidence()
        self._parts: list[str] = []
        self._logprobs: list[tuple[str, float]] = []
        self._got_engine = self._first = self._done = 0.0
        self._gave_up = False  # cancelled while it waited for the engine: never ran

    @classmethod
    def start(cls, runtime: Runtime, messages: Sequence[Message], params: GenerationParams,
              cancel: threading.Event, *, prefix: str = "", pace_s: float = 0.0) -> LocalRun:
        """Tokenise and get ready (raises `ContextOverflowError` now, before any token).

        `pace_s`: see `Runtime.stream`.
        """
        engine = runtime.engine
        prompt = engine.render(messages) + prefix if prefix else messages
        stop = threading.Event()
        if isinstance(cancel, CancelEvent):  # else the cancel is seen between tokens only
            cancel.link(stop)
        tokens = engine.stream(prompt, params, stop)
        if pace_s:
            tokens.pace(pace_s)
        return cls(runtime, tokens, stop, cancel, prefix)

    @property
    def tokens(self) -> int:
        return self._running.tokens

    @property
    def text(self) -> str:
        """The local answer so far."""
        return self._prefix + "".join(self._parts)

    @property
    def confidence(self) -> Confidence:
        return self._running.value()

    @property
    def running(self) -> RunningConfidence:
        """The running confidence (read it between pieces, on the consuming thread)."""
        return self._running

    @property
    def cancelled(self) -> bool:
        return self._gave_up or self._tokens.finish_reason == "cancelled"

    @property
    def cancelled_by_user(self) -> bool:
        return self._user_cancel.is_set()

    def cancel(self) -> None:
        self._stop.set()

    def _wait_for_engine(self) -> bool:
        """Take the engine (True), or give up once the request is cancelled while it waits
        (False). A blocking acquire would not see the cancel: a client that left the queue
        would keep its place (`runtime.queue_size`) until the generation ahead of it ended,
        and a newcomer would get 429 meanwhile."""
        lock = self._runtime._engine_lock
        while not lock.acquire(timeout=ENGINE_WAIT_POLL_S):
            if self._user_cancel.is_set() or self._stop.is_set():
                self._gave_up = True
                return False
        return True

    def pieces(self) -> Iterator[LocalPiece]:
        """The answer's pieces; none when the request is cancelled before it gets the
        engine (it then ends `cancelled`, with no tokens)."""
        carried = 0  # how many of the tokens a piece has carried
        with_tokens = self._runtime.engine.info.has_logprobs
        if not self._wait_for_engine():
            return
        try:
            self._got_engine = time.perf_counter()
            for event in self._tokens:
                self._running.add(event)
                if event.token_id >= 0 or not self._logprobs:
                    self._logprobs.append((event.text, event.logprob))
                else:  # text held back for a stop string, flushed with no model step
                    text, logprob = self._logprobs[-1]
                    self._logprobs[-1] = (text + event.text, logprob)
                if self._user_cancel.is_set():
                    self._stop.set()
                if event.text:
                    if not self._first:
                        self._first = time.perf_counter()
                    self._parts.append(event.text)
                    tokens = tuple(self._logprobs[carried:]) if with_tokens else ()
                    carried = len(self._logprobs)
                    yield LocalPiece(event.text, tokens)
            self._done = time.perf_counter()
        finally:
            self._runtime._engine_lock.release()

    def close(self) -> None:
        self._stop.set()
        close = getattr(self._tokens, "close", None)
        if close is not None:
            close()
        if not self._done:
            self._done = time.perf_counter()

    def result(self, reason: str, mode: Mode, started: float, snapshot: Snapshot,
               prepared: Prepared | None = None, *, prefix: str = "") -> Result:
        usage = self._tokens.usage or Usage(0, 0)
        finish: FinishReason = self._tokens.finish_reason or "cancelled"
        done = self._done or time.perf_counter()
        first = self._first or done
        got = self._got_engine or started
        decode_s = done - first
        rate = (usage.completion_tokens - 1) / decode_s if decode_s > 0 else 0.0
        blocked = prepared is not None and prepared.blocked is not None
        return Result(
            text=prefix + "".join(self._parts),
            source="local",
            reason=reason,
            confidence=self._running.value(),
            usage=usage,
            timings=Timings(
                queued_ms=max(0.0, got - started) * 1e3,
                ttft_ms=(first - started) * 1e3,
                total_ms=(done - started) * 1e3,
                tokens_per_s=rate,
            ),
            resources=snapshot,
            finish_reason=finish,
            model=self._runtime.engine.info.id,
            mode=mode,
            # nothing left the device; report the privacy verdict only when it decided that
            redactions=dict(prepared.redactions) if blocked and prepared else {},
            token_logprobs=(tuple(self._logprobs)
                            if self._runtime.engine.info.has_logprobs else None),
        )
