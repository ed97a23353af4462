"""What a started request is: its plan, its queue slot, and the stream of its answer."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from runtime.cloud import Prepared
from runtime.errors import QueueFullError
from runtime.result import Result

Route = Literal["local", "cloud", "cascade"]


@dataclass(frozen=True, slots=True)
class Plan:
    """Where a request goes first, why, and what to do if the cloud fails."""

    route: Route
    reason: str
    prepared: Prepared | None = None
    fallback: bool = True  # a failed cloud call is answered locally (False for cloud-only)
    decision: dict[str, Any] | None = None  # the policy's decision and trace
    reservation: int | None = None  # its claim on the daily cloud budget (runtime.budget)
    # The cloud tokens the budget rule projected (prompt + expected output); what a cascade
    # claims on the budget when it escalates (0: planned without the cloud as an option).
    projected_tokens: int = 0


COLLECT_PACE_S = 0.05  # see Runtime.stream(pace_s=...)


class CancelEvent(threading.Event):
    """A request's cancel flag that also sets the stop events linked to it (`link`): a
    cancel then reaches a running generation at once — an engine blocked on a stalled server
    wakes up — not only when its next token arrives."""

    def __init__(self) -> None:
        super().__init__()
        self._links: list[Callable[[], None]] = []
        self._links_lock = threading.Lock()

    def link(self, stop: threading.Event | Callable[[], None]) -> None:
        """Set `stop` (an event), or call it, whenever this is set (now, if it already is)."""
        act = stop.set if isinstance(stop, threading.Event) else stop
        with self._links_lock:
            self._links.append(act)
            already = self.is_set()
        if already:
            act()

    def set(self) -> None:
        super().set()
        with self._links_lock:
            links = list(self._links)
        for act in links:
            act()


class ResultStream(Iterator[str]):
    """Text deltas of an answer as they are produced; `result` is set once exhausted.

    `cancel()` (any thread) stops generation after the current token; `close()` releases the
    engine at once. Iterate to the end or close it to free its queue slot at once; a stream
    dropped unread gives its slot back when it is garbage-collected.
    """

    def __init__(self, cancel: threading.Event, slot: Slot | None = None, *, rid: str = "",
                 context: StreamContext | None = None, pace_s: float = 0.0) -> None:
        self._pieces: Iterator[str] = iter(())
        self._cancel = cancel
        self._slot = slot
        self.id = rid  # known before the first token (the API's response id)
        self.context = context
        self.pace_s = pace_s  # see Runtime.stream; also paces a local fallback
        self.result: Result | None = None
        if slot is not None:  # an unstarted generator has no `finally` to run
            weakref.finalize(self, slot.release)

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


class Admission:
    """A bounded queue: at most one request running and `size` waiting, else `QueueFullError`.

    `admit()` claims a place at call time (before any work) and returns the `Slot` that
    gives it back; `depth` counts places held (running + waiting).
    """

    __slots__ = ("_what", "_size", "_held", "_lock")

    def __init__(self, what: str, size: int) -> None:
        self._what = what  # names the queue in the error: "the local engine's queue is full"
        self._size = size
        self._held = 0
        self._lock = threading.Lock()

    @property
    def depth(self) -> int:
        with self._lock:
            return self._held

    def admit(self) -> Slot:
        with self._lock:
            if self._held >= self._size + 1:
                raise QueueFullError(f"{self._what} queue is full ({self._size} waiting)")
            self._held += 1
        return Slot(self)

    def _release(self) -> None:
        with self._lock:
            self._held -= 1


class Slot:
    """One admitted request's place in its queue; release is idempotent."""

    __slots__ = ("_queue", "_held", "_lock")

    def __init__(self, queue: Admission) -> None:
        self._queue = queue
        self._held = True
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            held, self._held = self._held, False
        if held:
            self._queue._release()

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass(frozen=True, slots=True)
class StreamContext:
    """What `Runtime._finish` needs to label and log a result."""

    rid: str
    prompt: str
    plan: Plan
